-- wrk script: paced ("fixed-rate") load for the sailmesh data-plane benchmark.
-- args: <think time per connection in ms>. Each connection waits a random 0.5x..1.5x of it
-- before each request, so the connections drift out of step (no bursts) and the total rate is
-- connections / (think + latency). The harness calibrates think on the warm-up run's achieved rate.
local think = 16.0

function init(args)
  if args[1] then think = tonumber(args[1]) end
  math.randomseed(os.time())
end

function delay()
  local d = think * (0.5 + math.random())
  return math.floor(d + math.random()) -- wrk's timer is in whole ms: dither keeps the mean exact
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SAILMESH-BENCH {"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "mean_us": %f, "max_us": %d}\n',
    summary.requests, summary.duration, e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
