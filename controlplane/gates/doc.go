// Package gates owns Deckhand's quality gates: the metric shape Cloud
// Manager reports, the rules that turn a step's metrics into a verdict
// (critical fails, important waits for an override, informational is
// shown only), and the three built-in evaluations the pipeline runner
// calls:
//
//   - EvaluateCodeQuality reads the JSON a code scan writes and applies
//     Cloud Manager's code-quality thresholds (configurable).
//   - SecurityProbe asks the stage dispatcher for the paths a hardened
//     AEM dispatcher must refuse (CRXDE, the Felix console, WebDAV, the
//     Sling GET servlet's JSON dumps, the query builder), tries the
//     default admin/admin login on the author and checks the home page's
//     clickjacking headers.
//   - LoadTest offers a fixed request rate to the stage site (an open
//     model: a slow server does not slow the offered load down) and
//     measures the error rate, response times and page views per minute
//     against the program's KPIs.
//
// The package also holds the YAML config of each gate (CodeQualityConfig,
// SecurityConfig, PerformanceConfig) so deckhand-server's config file can
// embed them under a pipeline. Running a gate's optional extra command,
// storing metrics, the WAITING state and its timeout belong to the
// pipeline runner, not here: everything in this package is either pure or
// bounded by its context and timeouts.
//
// docs/gates.md lists every metric with its id, severity and threshold.
package gates
