-- Reserve: admit a hold only if spent + held + amount <= cap in every window.
-- KEYS[4] the request's record (hash), KEYS[5..] the spent counters of the capped windows.
-- ARGV: request_id, now_ms, amount, expiry_ms, record_ttl_ms, hold_keys_ttl_ms,
--       then one (window, cap) pair per spent key.
-- Returns {status, held amount, total held, spent...}; status is admitted|replayed|refused.

local RECORD = KEYS[4]
local id, now_ms, amount = ARGV[1], ARGV[2], ARGV[3]
local expiry_ms, record_ttl_ms, hold_keys_ttl_ms = ARGV[4], ARGV[5], ARGV[6]
local nwin = #KEYS - 4

repair_holds()
sweep_holds(now_ms)

local function reply(status, held_amount)
  local out = {status, held_amount, held_total()}
  for _, v in ipairs(read_counters(5, nwin)) do
    out[#out + 1] = v
  end
  return out
end

if redis.call('EXISTS', RECORD) == 1 then
  return reply('replayed', redis.call('HGET', RECORD, 'amount') or '0')
end

local held = tonumber(held_total())
local want = tonumber(amount)
for i = 1, nwin do
  local spent = tonumber(redis.call('GET', KEYS[4 + i]) or '0')
  local cap = tonumber(ARGV[6 + 2 * i])
  if spent + held + want > cap then
    return reply('refused', amount)
  end
end

redis.call('ZADD', HOLDS, expiry_ms, id)
redis.call('HSET', AMOUNTS, id, amount)
redis.call('INCRBY', TOTAL, amount)
local ttl = math.max(tonumber(hold_keys_ttl_ms), redis.call('PTTL', HOLDS))
redis.call('PEXPIRE', HOLDS, ttl)
redis.call('PEXPIRE', AMOUNTS, ttl)
redis.call('PEXPIRE', TOTAL, ttl)

redis.call('HSET', RECORD, 'state', 'held', 'amount', amount)
for i = 1, nwin do
  redis.call('HSET', RECORD, 'cap:' .. ARGV[5 + 2 * i], ARGV[6 + 2 * i])
end
redis.call('PEXPIRE', RECORD, record_ttl_ms)

return reply('admitted', amount)
