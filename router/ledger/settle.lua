-- Settle: charge the actual cost to every window, drop the hold, append to the audit stream.
-- Charging twice for one request id is impossible: the record's state becomes 'settled'.
-- KEYS[4] the request's record, KEYS[5] the audit stream, KEYS[6..] every window's spent
-- counter. ARGV: request_id, now_ms, actual, record_ttl_ms, audit_maxlen, tenant,
-- then one counter TTL (seconds) per spent key, then audit field/value pairs.
-- Returns {status, total held, {window, cap, ...} from the record, spent...};
-- status is charged|replayed.

local RECORD, AUDIT = KEYS[4], KEYS[5]
local id, now_ms, actual = ARGV[1], ARGV[2], ARGV[3]
local record_ttl_ms, maxlen, tenant = ARGV[4], ARGV[5], ARGV[6]
local nwin = #KEYS - 5

repair_holds()

local status = 'replayed'
if redis.call('HGET', RECORD, 'state') ~= 'settled' then
  status = 'charged'
  drop_hold(id)
  for i = 1, nwin do
    redis.call('INCRBY', KEYS[5 + i], actual)
    redis.call('EXPIRE', KEYS[5 + i], ARGV[6 + i])
  end
  local held = redis.call('HGET', RECORD, 'amount') or '0'
  redis.call('HSET', RECORD, 'state', 'settled', 'actual', actual, 'amount', held)
  redis.call('PEXPIRE', RECORD, record_ttl_ms)
  local entry = {'request_id', id, 'tenant', tenant, 'micros', actual, 'held', held, 'ts', now_ms}
  for i = 7 + nwin, #ARGV do
    entry[#entry + 1] = ARGV[i]
  end
  redis.call('XADD', AUDIT, 'MAXLEN', '~', maxlen, '*', unpack(entry))
end

local caps = {}
local record = redis.call('HGETALL', RECORD)
for i = 1, #record, 2 do
  if string.sub(record[i], 1, 4) == 'cap:' then
    caps[#caps + 1] = string.sub(record[i], 5)
    caps[#caps + 1] = record[i + 1]
  end
end

local out = {status, held_total(), caps}
for _, v in ipairs(read_counters(6, nwin)) do
  out[#out + 1] = v
end
return out
