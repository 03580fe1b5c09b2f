-- Reserve: admit a hold only if spent + held + amount <= cap in every window.
-- KEYS[4] the request's record (hash), KEYS[5] the pace hash, KEYS[6] the refusals stream,
-- KEYS[7..] the spent counters of the capped windows.
-- ARGV: request_id, now_ms, amount, expiry_ms, record_ttl_ms, hold_keys_ttl_ms,
--       refusals_maxlen, then one (window, cap) pair per spent key.
-- Returns {status, held amount, total held, lambda, spent...};
-- status is admitted|replayed|refused. A refusal is appended to the refusals stream with
-- the window that could not cover it, as it stood at that moment.

local RECORD, PACE, REFUSALS = KEYS[4], KEYS[5], KEYS[6]
local id, now_ms, amount = ARGV[1], ARGV[2], ARGV[3]
local expiry_ms, record_ttl_ms, hold_keys_ttl_ms = ARGV[4], ARGV[5], ARGV[6]
local refusals_maxlen = ARGV[7]
local FIRST = 6
local nwin = #KEYS - FIRST

repair_holds()
sweep_holds(now_ms)

local function reply(status, held_amount)
  local out = {status, held_amount, held_total(), redis.call('HGET', PACE, 'lambda') or '0'}
  for _, v in ipairs(read_counters(FIRST + 1, nwin)) do
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
  local spent = redis.call('GET', KEYS[FIRST + i]) or '0'
  local cap = ARGV[7 + 2 * i]
  if tonumber(spent) + held + want > tonumber(cap) then
    redis.call('XADD', REFUSALS, 'MAXLEN', '~', refusals_maxlen, '*',
      'request_id', id, 'micros', amount, 'window', ARGV[6 + 2 * i], 'cap', cap,
      'spent', spent, 'held', held_total(), 'ts', now_ms)
    redis.call('PEXPIRE', REFUSALS, hold_keys_ttl_ms)
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
  redis.call('HSET', RECORD, 'cap:' .. ARGV[6 + 2 * i], ARGV[7 + 2 * i])
end
redis.call('PEXPIRE', RECORD, record_ttl_ms)

return reply('admitted', amount)
