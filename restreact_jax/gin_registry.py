"""External gin configurables: library classes that gin files may construct.

Library code never imports gin; this module registers the few value types that
experiment files build (model configs, mesh settings, ...). Imported by the CLI
before any gin file is parsed.
"""

import gin

# Registrations are added beside the classes they expose, e.g.
# gin.external_configurable(configs.TransformerConfig, module='models').
