-- Shared prelude of every ledger script (prepended by scripts.py).
-- KEYS[1] holds zset (request id -> expiry ms), KEYS[2] hash (request id -> micros),
-- KEYS[3] string counter: the sum of KEYS[2]. Amounts stay strings on their way to
-- INCRBY/DECRBY so that large integers are never rounded through a Lua double.

local HOLDS, AMOUNTS, TOTAL = KEYS[1], KEYS[2], KEYS[3]

-- Make the three hold keys agree again if one of them expired alone.
local function repair_holds()
  if redis.call('EXISTS', HOLDS) == 0 then
    redis.call('DEL', AMOUNTS, TOTAL)
  elseif redis.call('EXISTS', TOTAL) == 0 then
    for _, v in ipairs(redis.call('HVALS', AMOUNTS)) do
      redis.call('INCRBY', TOTAL, v)
    end
  end
end

local function held_total()
  return redis.call('GET', TOTAL) or '0'
end

-- Remove one hold; returns its amount (a string) or false when there was none.
local function drop_hold(id)
  local amount = redis.call('HGET', AMOUNTS, id)
  redis.call('ZREM', HOLDS, id)
  if amount then
    redis.call('HDEL', AMOUNTS, id)
    redis.call('DECRBY', TOTAL, amount)
  end
  if redis.call('EXISTS', HOLDS) == 0 then
    redis.call('DEL', AMOUNTS, TOTAL)
  end
  return amount
end

-- Drop every hold whose expiry is at or before now_ms.
local function sweep_holds(now_ms)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', HOLDS, '-inf', now_ms)) do
    drop_hold(id)
  end
end

-- Read string counters; a missing key is zero.
local function read_counters(first, count)
  local out = {}
  for i = first, first + count - 1 do
    out[#out + 1] = redis.call('GET', KEYS[i]) or '0'
  end
  return out
end
