-- Settle: charge the actual cost to every window, drop the hold, append to the audit stream,
-- and move the tenant's pacing price lambda.
-- Charging twice for one request id is impossible: the record's state becomes 'settled'.
-- KEYS[4] the request's record, KEYS[5] the audit stream, KEYS[6] the pace hash,
-- KEYS[7..10] the spent counters of the hourly, daily, weekly and monthly windows (the order
-- of windows.WINDOWS).
-- ARGV: request_id, now_ms, actual, record_ttl_ms, audit_maxlen, tenant, gain, max_lambda,
--       counter_grace_s, then (start_ms, end_ms) per spent key, then audit field/value pairs.
-- A counter lives until its window's end plus counter_grace_s.
-- Returns {status, total held, {window, cap, ...} from the record, lambda, spent...};
-- status is charged|replayed.

local RECORD, AUDIT, PACE = KEYS[4], KEYS[5], KEYS[6]
local id, now_ms, actual = ARGV[1], ARGV[2], ARGV[3]
local record_ttl_ms, maxlen, tenant = ARGV[4], ARGV[5], ARGV[6]
local gain, max_lambda, grace_s = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local FIRST, ARGS = 6, 9
local NAMES = {'hourly', 'daily', 'weekly', 'monthly'}
local nwin = #KEYS - FIRST

local function counter_ttl_s(i)
  local end_ms = tonumber(ARGV[ARGS + 2 * i])
  return math.max(1, math.ceil((end_ms - tonumber(now_ms)) / 1000)) + grace_s
end

repair_holds()

local caps = {}
local function read_caps()
  caps = {}
  local record = redis.call('HGETALL', RECORD)
  for i = 1, #record, 2 do
    if string.sub(record[i], 1, 4) == 'cap:' then
      caps[#caps + 1] = string.sub(record[i], 5)
      caps[#caps + 1] = record[i + 1]
    end
  end
end

-- lambda moves by exp(gain * (used - elapsed)) for the window furthest ahead of its even
-- pace, at most by a factor e^0.5 per settle; from 0 it starts at 10 per cap-dollar, and it
-- drops back to 0 once it falls below half of that.
local function update_pace()
  local worst, worst_cap = nil, nil
  for c = 1, #caps, 2 do
    local cap = tonumber(caps[c + 1])
    if cap > 0 then
      for i = 1, nwin do
        if NAMES[i] == caps[c] then
          local start_ms = tonumber(ARGV[ARGS + 2 * i - 1])
          local end_ms = tonumber(ARGV[ARGS + 2 * i])
          local elapsed = (tonumber(now_ms) - start_ms) / (end_ms - start_ms)
          local spent = tonumber(redis.call('GET', KEYS[FIRST + i]) or '0')
          local err = (spent + tonumber(held_total())) / cap - elapsed
          if worst == nil or err > worst then
            worst, worst_cap = err, cap
          end
        end
      end
    end
  end
  if worst == nil or gain <= 0 then
    return
  end
  local seed = 10 * 1000000 / worst_cap
  local lam = tonumber(redis.call('HGET', PACE, 'lambda') or '0')
  local step = math.max(-0.5, math.min(0.5, gain * worst))
  if step > 0 then
    lam = math.min(max_lambda, math.max(lam, seed) * math.exp(step))
  else
    lam = lam * math.exp(step)
    if lam < seed / 2 then
      lam = 0
    end
  end
  redis.call('HSET', PACE, 'lambda', string.format('%.6g', lam), 'updated_ms', now_ms)
  local ttl = 0
  for i = 1, nwin do
    ttl = math.max(ttl, counter_ttl_s(i))
  end
  redis.call('EXPIRE', PACE, ttl)
end

local status = 'replayed'
if redis.call('HGET', RECORD, 'state') ~= 'settled' then
  status = 'charged'
  drop_hold(id)
  for i = 1, nwin do
    redis.call('INCRBY', KEYS[FIRST + i], actual)
    redis.call('EXPIRE', KEYS[FIRST + i], counter_ttl_s(i))
  end
  local held = redis.call('HGET', RECORD, 'amount') or '0'
  redis.call('HSET', RECORD, 'state', 'settled', 'actual', actual, 'amount', held)
  redis.call('PEXPIRE', RECORD, record_ttl_ms)
  local entry = {'request_id', id, 'tenant', tenant, 'micros', actual, 'held', held, 'ts', now_ms}
  for i = ARGS + 2 * nwin + 1, #ARGV do
    entry[#entry + 1] = ARGV[i]
  end
  redis.call('XADD', AUDIT, 'MAXLEN', '~', maxlen, '*', unpack(entry))
  read_caps()
  update_pace()
else
  read_caps()
end

local out = {status, held_total(), caps, redis.call('HGET', PACE, 'lambda') or '0'}
for _, v in ipairs(read_counters(FIRST + 1, nwin)) do
  out[#out + 1] = v
end
return out
