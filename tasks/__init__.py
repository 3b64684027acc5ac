"""SeqIO task registrations (importable from gin files)."""
