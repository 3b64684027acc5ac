"""Gin files (this __init__ lets gin files be found as package data)."""
