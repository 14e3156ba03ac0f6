-- wrk script: send pre-generated deliveries, each once, from the file named by BENCH_REQUESTS.
-- One line per delivery: signature TAB delivery id TAB event type TAB body (a compact JWE).
-- With several wrk threads, thread k sends lines k, k+n, k+2n... so no two threads repeat one.
-- At the end it prints one JSON line: requests, seconds, non-2xx, socket errors, latency
-- percentiles (ms) and how many times a thread ran out of deliveries and started over (wraps).

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("BENCH_PATH") or "/webhooks/kayle"
  local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  requests = {}
  wraps = 0
  index = 0
  local n = 0
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    if n % nthreads == id then
      local sig, did, event, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", path, {
        ["Content-Type"] = "application/jose",
        ["X-Kayle-Signature"] = sig,
        ["X-Kayle-Delivery-Id"] = did,
        ["X-Kayle-Event"] = event,
      }, body)
    end
    n = n + 1
  end
end

function request()
  index = index + 1
  if index > #requests then
    index = 1
    wraps = wraps + 1
  end
  return requests[index]
end

function done(summary, latency, requests)
  local wraps_total = 0
  for _, thread in ipairs(threads) do
    wraps_total = wraps_total + (thread:get("wraps") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %.3f, "non2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "wraps": %d}\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, wraps_total))
end

