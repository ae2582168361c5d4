-- wrk script: GET an audit log proof for a random event, or /healthz.
--   MODE=inclusion    GET /v1/audit/proofs/inclusion?seq=S, S random in 1..EVENTS
--   MODE=consistency  GET /v1/audit/proofs/consistency?from=M, M random in 1..EVENTS-1
--   MODE=healthz      GET /healthz (the HTTP floor), same headers
-- The tree size defaults to the newest checkpoint (EVENTS). The bearer
-- token comes from TOKEN; every request carries it.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

local mode = os.getenv("MODE") or "healthz"
local events = tonumber(os.getenv("EVENTS") or "1")
local headers = { ["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "") }
unexpected = 0

function init(args)
  math.randomseed(os.time() * 100 + thread_id)
end

function request()
  local path
  if mode == "inclusion" then
    path = "/v1/audit/proofs/inclusion?seq=" .. math.random(1, events)
  elseif mode == "consistency" then
    path = "/v1/audit/proofs/consistency?from=" .. math.random(1, events - 1)
  else
    path = "/healthz"
  end
  return wrk.format("GET", path, headers)
end

function response(status, headers, body)
  if status ~= 200 then
    unexpected = unexpected + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("unexpected") or 0)
  end
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non200=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status,
    bad))
end
