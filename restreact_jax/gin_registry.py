"""External gin configurables: library classes that gin files may construct.

Library code never imports gin; this module registers the few value types that
experiment files build (model configs, mesh settings, ...). Imported by the CLI
before any gin file is parsed.
"""

import gin

# Registrations are added beside the classes they expose, e.g.
# gin.external_configurable(configs.TransformerConfig, module='models').

from restreact_jax.models import configs as _model_configs  # noqa: E402
gin.external_configurable(_model_configs.TransformerConfig, module='models')

from restreact_jax.search import http as _search_http  # noqa: E402
gin.external_configurable(_search_http.HttpSearchConfig, module='search')

from restreact_jax.feedback import rule_ranker as _rule_ranker  # noqa: E402
gin.external_configurable(_rule_ranker.RuleWeights, module='feedback')

from restreact_jax.rest import phases as _rest_phases  # noqa: E402
gin.external_configurable(_rest_phases.TrainSettings, module='rest')
gin.external_configurable(_rest_phases.AgentSettings, module='rest')
