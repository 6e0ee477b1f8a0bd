// What a user of the mixin may override: the job selector, the runbook address and the
// alerts' thresholds. dashboards/overview/common.py reads the thresholds from here too, so
// that the dashboard's panels turn red where the alerts fire.
{
  _config+:: {
    // Selects the scrape job(s) of the exporter, inserted between {} of the exporter-down
    // alert. Every scrape config in docs/, deploy/ and prometheus/ names its job so, and a
    // ServiceMonitor's job is its Service's name: change this when your job is another.
    exporterSelector: 'job="ucdn-prefetch-exporter"',

    // Each alert's runbook_url: this with the alert's name in lower case.
    runbookURLPattern: 'https://github.com/ucdn-prefetch-exporter/ucdn-prefetch-exporter/blob/main/docs/runbook.md#alert-%s',

    // Share of API calls that did not return ok, over 5 minutes (UcdnPrefetchApiErrorsHigh).
    apiErrorRatio: 0.1,
    // Age of the oldest unfinished prefetch task (UcdnPrefetchTaskStuck).
    prefetchTaskAgeSeconds: 7200,
    // Share of a target's finished prefetch URLs that failed (UcdnPrefetchFailureRatioHigh).
    prefetchFailureRatio: 0.1,
    // p90 of the completion time of successful prefetch URLs (UcdnPrefetchCompletionSlow).
    // The histogram's largest finite bucket is 4 h: a limit above it cannot fire.
    prefetchP90Seconds: 3600,
    // Age of the oldest unfinished refresh task (UcdnRefreshTaskStuck).
    refreshTaskAgeSeconds: 600,
    // Share of a domain's daily quota submitted today (UcdnDomainQuotaNearlyUsed).
    domainQuotaUsedRatio: 0.8,
    // Share of a domain's finished URLs of one kind that failed, and how many times its
    // project's ratio it must also exceed (UcdnDomainFailureRatioHigh).
    domainFailureRatio: 0.2,
    domainFailureRatioOverProject: 2.5,
    // Finished URLs a failure ratio needs before it may page: two failures out of three
    // say nothing (both failure ratio alerts).
    minFinishedUrls: 20,
  },
}
