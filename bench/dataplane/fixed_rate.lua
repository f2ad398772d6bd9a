-- wrk script: fixed-rate load for the sailmesh data-plane benchmark (a wrk2-like schedule in plain wrk).
-- args: <requests per second for this wrk thread>. Every time a connection is ready to send, delay()
-- claims the next slot of one shared schedule (slots 1/rate apart, on the monotonic clock), so the
-- requests are spread evenly over time (no bursts) and the rate is exact while a connection is free.
-- wrk's timers are whole milliseconds: a send is off its slot by at most 0.5 ms, and never drifts.
-- If the set-up falls far behind (more than 10 slots + 5 ms), the missed slots are dropped, as hey does.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } sailmesh_timespec;
int clock_gettime(int clk_id, sailmesh_timespec *tp);
]]
local ts = ffi.new("sailmesh_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000.0 + tonumber(ts.tv_nsec) / 1e6
end

local interval = 1.0 -- ms between two sends of this thread
local next_slot = nil

function init(args)
  if args[1] then interval = 1000.0 / tonumber(args[1]) end
end

function delay()
  local t = now_ms()
  if next_slot == nil or next_slot < t - 10 * interval - 5 then next_slot = t end
  local d = next_slot - t
  next_slot = next_slot + interval
  if d <= 0 then return 0 end
  return math.floor(d + 0.5)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SAILMESH-BENCH {"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "mean_us": %f, "max_us": %d}\n',
    summary.requests, summary.duration, e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
