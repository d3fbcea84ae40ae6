-- GCRA in one round trip on the Redis server's clock, so every API and worker process shares one time base.
-- KEYS[1]: the bucket. ARGV: cost, rate per second, burst. Times in microseconds.
-- Returns {allowed (0|1), remaining, retry_after_us, reset_after_us}. Same arithmetic as ratelimit/base.py.
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = 1000000 / rate
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', key))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + interval * cost
local needed = math.max(cost, 1)
local allow_at = tat
if needed <= burst then
  allow_at = tat + interval * needed - tolerance
end
if allow_at - now > 0.001 then
  local remaining = math.max(0, math.floor((now - (tat - tolerance)) / interval + 1e-9))
  return {0, remaining, math.ceil(allow_at - now), math.ceil(tat - now)}
end
local remaining = math.max(0, math.floor((now - (new_tat - tolerance)) / interval + 1e-9))
local reset_after = new_tat - now
if cost > 0 then
  redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil(reset_after / 1000)))
end
return {1, remaining, 0, math.ceil(reset_after)}
