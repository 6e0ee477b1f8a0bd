// ucdn-prefetch-exporter's monitoring mixin: _config, prometheusRules, prometheusAlerts
// and grafanaDashboards, as monitoring-mixins.dev describes them.
(import 'config.libsonnet') +
(import 'rules.libsonnet') +
(import 'alerts.libsonnet') +
(import 'dashboards.libsonnet')
