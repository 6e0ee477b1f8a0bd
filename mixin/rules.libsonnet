// The recording rules, named level:metric:operations.
//
// The exporter's task and URL metrics are gauges of the current lookback window (tasks
// created in the last 24 h by default), not counters: the rules compare them with each
// other, never rate() them. Only ucdn_api_requests_total and the *_finished_total series
// are counters. The same holds for the refresh (ucdn_refresh_*), per-domain
// (*_domain_urls) and daily quota (ucdn_domain_quota*) gauges.
local quantiles(kind) = [
  {
    record: 'project_id_platform_quantile:ucdn_%s_url_completion_seconds:histogram_quantile' % kind,
    // The histogram is a gauge histogram, so its buckets are used as they are (no rate).
    // ">= 0" drops the NaN of a target with no finished URL.
    expr: |||
      histogram_quantile(%s, sum by (project_id, platform, le) (ucdn_%s_url_completion_seconds_bucket{status="success"})) >= 0
    ||| % [quantile, kind],
    labels: { quantile: quantile },
  }
  for quantile in ['0.5', '0.9', '0.99']
];

// How long the oldest task of a kind still in wait or process has been waiting; absent
// when nothing is unfinished. max drops job/instance, so that two exporters watching the
// same target count once.
local oldestUnfinishedAge(kind) = {
  record: 'project_id_platform:ucdn_%s_oldest_unfinished_task_age_seconds:max' % kind,
  expr: |||
    max by (project_id, platform) (time() - ucdn_%s_oldest_unfinished_task_created_timestamp_seconds)
  ||| % kind,
};

{
  prometheusRules+:: {
    groups+: [
      {
        name: 'ucdn_prefetch.rules',
        rules: [
          {
            // Share of finished URLs that failed, per target. Targets with no finished
            // URL yet are left out instead of recording NaN.
            record: 'project_id_platform:ucdn_prefetch_url_failures_per_finished:ratio',
            expr: |||
              sum by (project_id, platform) (ucdn_prefetch_urls{status="failure"})
                /
              (sum by (project_id, platform) (ucdn_prefetch_urls{status=~"success|failure"}) > 0)
            |||,
          },
          {
            // Finished URLs per target, so that alerts can ignore tiny samples.
            record: 'project_id_platform:ucdn_prefetch_urls_finished:sum',
            expr: 'sum by (project_id, platform) (ucdn_prefetch_urls{status=~"success|failure"})',
          },
        ] + quantiles('prefetch') + [
          oldestUnfinishedAge('prefetch'),
          {
            // URLs the exporter saw finish per second, by status: from its counters, so
            // neither a restart nor URLs leaving the window read as a drop. max, not sum:
            // two exporters watching the same target see the same URLs finish.
            record: 'project_id_platform_status:ucdn_prefetch_urls_finished:rate5m',
            expr: 'max by (project_id, platform, status) (rate(ucdn_prefetch_urls_finished_total[5m]))',
          },
          {
            // API calls per second by action and outcome, per scrape job.
            record: 'job_action_outcome:ucdn_api_requests:rate5m',
            expr: 'sum by (job, action, outcome) (rate(ucdn_api_requests_total[5m]))',
          },
          {
            // Share of API calls (every action) that did not succeed, per scrape job;
            // absent while no call is made.
            record: 'job:ucdn_api_request_errors_per_requests:ratio_rate5m',
            expr: |||
              sum by (job) (rate(ucdn_api_requests_total{outcome!="ok"}[5m]))
                /
              (sum by (job) (rate(ucdn_api_requests_total[5m])) > 0)
            |||,
          },
          // Refresh tasks: the same shapes as the prefetch rules above.
          oldestUnfinishedAge('refresh'),
        ] + quantiles('refresh') + [
          {
            // URLs per project, domain, kind (prefetch|refresh) and status, platforms
            // summed: one series family for both kinds, so that one alert covers both.
            record: 'project_id_domain_kind_status:ucdn_domain_urls:sum',
            expr: |||
              label_replace(sum by (project_id, domain, status) (ucdn_prefetch_domain_urls), "kind", "prefetch", "", "")
                or
              label_replace(sum by (project_id, domain, status) (ucdn_refresh_domain_urls), "kind", "refresh", "", "")
            |||,
          },
          {
            // Finished (succeeded + failed) URLs per domain and kind.
            record: 'project_id_domain_kind:ucdn_domain_urls_finished:sum',
            expr: |||
              sum by (project_id, domain, kind) (project_id_domain_kind_status:ucdn_domain_urls:sum{status=~"success|failure"})
            |||,
          },
          {
            // failed / finished per domain and kind; absent while nothing has finished.
            record: 'project_id_domain_kind:ucdn_domain_url_failures_per_finished:ratio',
            expr: |||
              sum by (project_id, domain, kind) (project_id_domain_kind_status:ucdn_domain_urls:sum{status="failure"})
                /
              (project_id_domain_kind:ucdn_domain_urls_finished:sum > 0)
            |||,
          },
          {
            // The same over every domain of a project: what a domain is compared with.
            record: 'project_id_kind:ucdn_domain_url_failures_per_finished:ratio',
            expr: |||
              sum by (project_id, kind) (project_id_domain_kind_status:ucdn_domain_urls:sum{status="failure"})
                /
              (sum by (project_id, kind) (project_id_domain_kind:ucdn_domain_urls_finished:sum) > 0)
            |||,
          },
          {
            // Share of each daily quota submitted today; max drops job/instance, so that
            // two exporters watching the same project count once. Absent for a quota of 0.
            record: 'project_id_domain_kind:ucdn_domain_quota_used_per_quota:ratio',
            expr: |||
              max by (project_id, domain, kind) (ucdn_domain_quota_used)
                /
              (max by (project_id, domain, kind) (ucdn_domain_quota) > 0)
            |||,
          },
        ],
      },
    ],
  },
}
