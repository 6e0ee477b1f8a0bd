// The overview dashboard, as dashboards/generate.py writes it (grafana-foundation-sdk).
// Its red thresholds are the alerts' limits in config.libsonnet at the time it was
// generated: overriding _config here moves the alerts, not the dashboard's lines.
{
  grafanaDashboards+:: {
    'ucdn-prefetch-overview.json': import '../dashboards/ucdn-prefetch-overview.json',
  },
}
