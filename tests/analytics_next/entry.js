// Exposes Segment's Analytics.js 2.0 browser client on window for browser tests.
import { AnalyticsBrowser } from '@segment/analytics-next'
window.AnalyticsBrowser = AnalyticsBrowser
