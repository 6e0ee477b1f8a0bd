// The alerts, in the style mixtool lints: a CamelCase name, a severity, a static summary
// (a sentence) and a description with the labels and value of the series that fires.
// Thresholds come from _config, and so do the limits the descriptions quote. The long
// texts are joined with +: jsonnet's % formatting walks a string character by character,
// which made rendering the alerts several times slower.

// A threshold as PromQL and people write it: 0.1, not 0.10000000000000001.
local number(value) = '%g' % value;
local percent(ratio) = number(ratio * 100) + '%';

// 7200 -> "2 hours", 600 -> "10 minutes": how the descriptions name a limit.
local duration(seconds) =
  local unit(count, name) = std.toString(count) + ' ' + name + (if count == 1 then '' else 's');
  if seconds % 3600 == 0 then unit(seconds / 3600, 'hour')
  else if seconds % 60 == 0 then unit(seconds / 60, 'minute')
  else unit(seconds, 'second');

// An alert on a target's collection of one kind of task.
local upstreamDown(kind, name, what, consequence='') = {
  alert: name,
  expr: 'ucdn_' + kind + '_up == 0',
  'for': '5m',
  labels: { severity: 'critical' },
  annotations: {
    summary: what + ' tasks cannot be collected.',
    description: 'Every scrape of {{ $labels.instance }} for 5 minutes failed to fetch the ' + kind + ' tasks of project {{ $labels.project_id }} on platform {{ $labels.platform }} from the UCDN API. Its ' + kind + ' task and URL metrics are missing until a collection succeeds.' + consequence,
  },
};

{
  local config = $._config,

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'ucdn_prefetch.alerts',
        rules: [
          alert { annotations+: { runbook_url: config.runbookURLPattern % std.asciiLower(alert.alert) } }
          for alert in [
            {
              alert: 'UcdnPrefetchExporterDown',
              expr: 'up{' + config.exporterSelector + '} == 0',
              'for': '5m',
              labels: { severity: 'critical' },
              annotations: {
                summary: 'The exporter cannot be scraped.',
                description: 'Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) for 5 minutes. No prefetch metric from it is current, so no other prefetch alert can fire for the targets it watches.',
              },
            },
            upstreamDown('prefetch', 'UcdnPrefetchUpstreamDown', 'Prefetch'),
            // UcdnRefreshTaskStuck reads the metrics this one says are missing.
            upstreamDown('refresh', 'UcdnRefreshUpstreamDown', 'Refresh', ' No refresh task of the target can be seen stuck meanwhile.'),
            {
              alert: 'UcdnPrefetchApiErrorsHigh',
              expr: 'job:ucdn_api_request_errors_per_requests:ratio_rate5m > ' + number(config.apiErrorRatio),
              'for': '10m',
              labels: { severity: 'warning' },
              annotations: {
                summary: 'Many of the UCDN API calls fail.',
                description: '{{ $value | humanizePercentage }} of the calls the exporter made to the UCDN API (job {{ $labels.job }}) over the last 5 minutes did not return a valid answer, above the limit of ' + percent(config.apiErrorRatio) + ', for 10 minutes. The dashboard\'s "API requests by outcome" panel says which kind of error.',
              },
            },
            {
              alert: 'UcdnPrefetchTaskStuck',
              expr: 'project_id_platform:ucdn_prefetch_oldest_unfinished_task_age_seconds:max > ' + number(config.prefetchTaskAgeSeconds),
              'for': '5m',
              labels: { severity: 'warning' },
              annotations: {
                summary: 'A prefetch task has been unfinished for too long.',
                description: 'The oldest prefetch task of project {{ $labels.project_id }} on platform {{ $labels.platform }} that is still waiting or in process was created {{ $value | humanizeDuration }} ago; the limit is ' + duration(config.prefetchTaskAgeSeconds) + '. Its URLs are not warm in the cache.',
              },
            },
            {
              alert: 'UcdnPrefetchFailureRatioHigh',
              // A minimum of finished URLs, so that two failures out of three do not page.
              expr: |||
                project_id_platform:ucdn_prefetch_url_failures_per_finished:ratio > %g
                  and on (project_id, platform)
                project_id_platform:ucdn_prefetch_urls_finished:sum >= %d
              ||| % [config.prefetchFailureRatio, config.minFinishedUrls],
              'for': '15m',
              labels: { severity: 'warning' },
              annotations: {
                summary: 'Many of the finished prefetch URLs failed.',
                description: 'Of the URLs of project {{ $labels.project_id }} on platform {{ $labels.platform }} that finished in the lookback window, {{ $value | humanizePercentage }} failed (limit ' + percent(config.prefetchFailureRatio) + ', with at least ' + number(config.minFinishedUrls) + ' finished URLs), for 15 minutes.',
              },
            },
            {
              alert: 'UcdnPrefetchCompletionSlow',
              expr: 'project_id_platform_quantile:ucdn_prefetch_url_completion_seconds:histogram_quantile{quantile="0.9"} > ' + number(config.prefetchP90Seconds),
              'for': '15m',
              labels: { severity: 'warning' },
              annotations: {
                summary: 'Prefetch URLs take long to warm.',
                description: '90% of the URLs of project {{ $labels.project_id }} on platform {{ $labels.platform }} that succeeded in the lookback window took up to {{ $value | humanizeDuration }} from task creation to finish (limit ' + duration(config.prefetchP90Seconds) + '), for 15 minutes.',
              },
            },
            {
              alert: 'UcdnRefreshTaskStuck',
              expr: 'project_id_platform:ucdn_refresh_oldest_unfinished_task_age_seconds:max > ' + number(config.refreshTaskAgeSeconds),
              'for': '1m',
              labels: { severity: 'warning' },
              annotations: {
                summary: 'A refresh task has been unfinished for too long.',
                description: 'The oldest refresh (purge) task of project {{ $labels.project_id }} on platform {{ $labels.platform }} that is still waiting or in process was created {{ $value | humanizeDuration }} ago; a refresh normally takes seconds to minutes and the limit is ' + duration(config.refreshTaskAgeSeconds) + '. Until it finishes the CDN may still serve the old content.',
              },
            },
            {
              alert: 'UcdnDomainQuotaNearlyUsed',
              expr: 'project_id_domain_kind:ucdn_domain_quota_used_per_quota:ratio > ' + number(config.domainQuotaUsedRatio),
              'for': '5m',
              labels: { severity: 'warning' },
              annotations: {
                summary: 'A domain has nearly used one of its daily quotas.',
                description: "Today's {{ $labels.kind }} submissions for domain {{ $labels.domain }} of project {{ $labels.project_id }} have used {{ $value | humanizePercentage }} of the daily quota (limit " + percent(config.domainQuotaUsedRatio) + '), for 5 minutes. Once the quota is used up the API rejects new tasks of that kind for the domain until the quota resets.',
              },
            },
            {
              alert: 'UcdnDomainPrefetchDisabled',
              // Platforms summed: the domain has prefetch URLs in the lookback window.
              expr: |||
                max by (project_id, domain) (ucdn_domain_prefetch_enabled) == 0
                  and on (project_id, domain)
                sum by (project_id, domain) (ucdn_prefetch_domain_urls) > 0
              |||,
              'for': '15m',
              labels: { severity: 'warning' },
              annotations: {
                summary: 'Prefetch is switched off on a domain that has prefetch tasks.',
                description: 'Domain {{ $labels.domain }} of project {{ $labels.project_id }} has prefetch URLs in the lookback window, but its prefetch switch is off, for 15 minutes: new prefetch tasks for it will be refused or not warm anything.',
              },
            },
            {
              alert: 'UcdnDomainFailureRatioHigh',
              // Above the limit, above a multiple of the project's own ratio for the same
              // kind, and enough finished URLs, so that one failed URL does not page.
              expr: |||
                project_id_domain_kind:ucdn_domain_url_failures_per_finished:ratio > %g
                  > on (project_id, kind) group_left ()
                (%g * project_id_kind:ucdn_domain_url_failures_per_finished:ratio)
                  and on (project_id, domain, kind)
                project_id_domain_kind:ucdn_domain_urls_finished:sum >= %d
              ||| % [config.domainFailureRatio, config.domainFailureRatioOverProject, config.minFinishedUrls],
              'for': '15m',
              labels: { severity: 'warning' },
              annotations: {
                summary: "The URLs of one domain fail far more often than its project's.",
                description: 'Of the {{ $labels.kind }} URLs of domain {{ $labels.domain }} in project {{ $labels.project_id }} that finished in the lookback window, {{ $value | humanizePercentage }} failed: above ' + percent(config.domainFailureRatio) + ' and above ' + number(config.domainFailureRatioOverProject) + " times the project's ratio over all its domains (with at least " + number(config.minFinishedUrls) + ' finished URLs), for 15 minutes. Something about this domain (its origin, its configuration) fails where the others do not.',
              },
            },
            {
              alert: 'UcdnDomainQuotaCollectionDown',
              // Down, or gone although the last day had it (the exporter collected quotas).
              expr: |||
                max by (project_id) (ucdn_domain_quota_up) == 0
                  or
                (
                  max by (project_id) (max_over_time(ucdn_domain_quota_up[1d]))
                    unless on (project_id)
                  max by (project_id) (ucdn_domain_quota_up)
                )
              |||,
              'for': '15m',
              labels: { severity: 'warning' },
              annotations: {
                summary: 'Domain quotas cannot be collected.',
                description: 'For 15 minutes the exporter has either failed to read the domains, daily quotas and prefetch switches of project {{ $labels.project_id }} (ucdn_domain_quota_up is 0) or stopped exposing them although it did within the last day. The quota and prefetch switch panels and alerts are blind for this project meanwhile.',
              },
            },
          ]
        ],
      },
    ],
  },
}
