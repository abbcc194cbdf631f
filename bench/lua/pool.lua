-- wrk script for the keyless benchmark.
--   [BENCH_RATE=R] wrk ... -s pool.lua URL -- POOL_FILE METHOD PATH THREADS
-- POOL_FILE: one request body per line ("-" for none); requests cycle through the pool.
-- BENCH_RATE: total requests per second to aim at (unset or 0: as fast as possible). wrk's delay() then keeps
--   each thread on a schedule of THREADS/R seconds per request (no catch-up bursts; the achieved rate is
--   reported). delay() is defined only then: wrk times every request through its timer when it exists.
-- Headers come from wrk's -H flags. done() prints one JSON line that bench/wrkrun.py reads.

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0

local thread_counter = 0
function setup(thread)
  thread:set("thread_id", thread_counter)
  thread_counter = thread_counter + 1
end

local requests = {}
local index = 1
local interval = 0
local next_slot = 0

function init(args)
  local pool_file, method, path = args[1], args[2], args[3]
  local threads = tonumber(args[4]) or 1
  if path == nil or path == "" then path = wrk.path end
  local bodies = {}
  if pool_file ~= nil and pool_file ~= "-" then
    for line in io.lines(pool_file) do
      if line ~= "" then bodies[#bodies + 1] = line end
    end
  end
  if #bodies == 0 then
    requests[1] = wrk.format(method, path, nil, nil)
  else
    for i, body in ipairs(bodies) do
      requests[i] = wrk.format(method, path, nil, body)
    end
  end
  -- Threads start at different places in the pool.
  index = ((thread_id or 0) * 7919) % #requests + 1
  if rate > 0 then
    interval = threads * 1000.0 / rate
  end
end

function request()
  local r = requests[index]
  index = index + 1
  if index > #requests then index = 1 end
  return r
end

if rate > 0 then
  function delay()
    if interval <= 0 then return 0 end
    local now = now_ms()
    local slot = next_slot
    if slot < now then slot = now end
    next_slot = slot + interval
    return math.floor(slot - now)
  end
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"duration_us":%d,"requests":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"lat_mean_us":%.1f,"lat_max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
