-- Shared by the bench scripts: print wrk's results as one JSON line, prefixed "BENCH_JSON ".
-- Latencies are in microseconds. "issued", "misses", "unknowns" and "stale" sum each thread's global
-- of that name (0 if unset).
local report = {}

local threads = {}

function report.setup(thread)
  table.insert(threads, thread)
end

function report.done(summary, latency, requests)
  local counts = { issued = 0, misses = 0, unknowns = 0, stale = 0 }
  for _, thread in ipairs(threads) do
    for name, value in pairs(counts) do
      counts[name] = value + (thread:get(name) or 0)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"issued":%d,'
      .. '"misses":%d,"unknowns":%d,"stale":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes, counts.issued,
    counts.misses, counts.unknowns, counts.stale,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end

return report
