-- wrk script: POST /v1/customers with a unique external_ref per request.
-- The bearer token comes from the TOKEN environment variable.
local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
  table.insert(threads, thread)
end

local counter = 0
local token = os.getenv("TOKEN")
local run = os.getenv("RUN_ID") or "0"
local unexpected = 0

function request()
  counter = counter + 1
  local ref = "WRK-" .. run .. "-" .. thread_id .. "-" .. counter
  local body = '{"external_ref":"' .. ref .. '","email":"bench@example.jp","locale":"ja",' ..
    '"basic4":{"name":"山田太郎","address":"東京都千代田区千代田1-1","birth_date":"1980-02-17","gender":"1"}}'
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

function response(status, headers, body)
  if status ~= 201 then
    unexpected = unexpected + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("unexpected") or 0)
  end
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non201=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status,
    bad))
end
