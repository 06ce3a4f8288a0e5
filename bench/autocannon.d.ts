/**
 * The part of autocannon 8's programmatic API the benchmarks use; the package ships no types.
 * Field names follow its README ("API" and "Results") and lib/aggregateResult.js.
 */
declare module "autocannon" {
  namespace autocannon {
    interface Options {
      url: string;
      title?: string;
      connections?: number;
      pipelining?: number;
      /** Seconds. */
      duration?: number;
      /** Seconds to wait for a response. */
      timeout?: number;
      method?: string;
      headers?: Record<string, string>;
      body?: string | Buffer;
    }

    /** hdr-histogram-percentiles-obj: `p2_5` is the 2.5th percentile, and so on. */
    interface Histogram {
      average: number;
      mean: number;
      stddev: number;
      min: number;
      max: number;
      total?: number;
      p1: number;
      p2_5: number;
      p10: number;
      p25: number;
      p50: number;
      p75: number;
      p90: number;
      p97_5: number;
      p99: number;
      p99_9: number;
    }

    interface Result {
      title?: string;
      url: string;
      connections: number;
      pipelining: number;
      /** Seconds. */
      duration: number;
      samples: number;
      errors: number;
      timeouts: number;
      mismatches: number;
      non2xx: number;
      "2xx": number;
      "4xx": number;
      "5xx": number;
      statusCodeStats: Record<string, { count: number }>;
      /** Milliseconds per request. */
      latency: Histogram & { totalCount: number };
      /** Requests completed per sample interval (one second by default). */
      requests: Histogram & { sent: number };
      /** Bytes per sample interval. */
      throughput: Histogram;
    }

    /** Without a callback, the instance is also a promise of the result. */
    interface Instance extends PromiseLike<Result> {
      stop(): void;
      on(event: "done", listener: (result: Result) => void): this;
    }
  }

  function autocannon(options: autocannon.Options): autocannon.Instance;
  export = autocannon;
}
