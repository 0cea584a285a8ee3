-- wrk script: GET /item/<id> with ids drawn from a Zipf distribution over 1..N, P(id = k) ∝ k^-s,
-- and one JSON line of figures at the end (examples/httpd/load reads it).
--
--   wrk -t2 -c64 -d15s -s zipf.lua http://127.0.0.1:8080 -- N S [SEED [IDS_FILE]]
--
-- Each wrk thread has its own Lua state: it builds the cumulative distribution once (init), draws
-- with a binary search (request), and keeps the set of ids it asked for, which done() merges to
-- count the distinct ids requested (and writes them to IDS_FILE, one a line, if given). SEED and
-- the thread's number seed its generator, so each wrk thread draws the same sequence of ids
-- whichever server it is pointed at.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_number", #threads)
end

local n, cdf
-- Globals, which done() (in wrk's main Lua state) reads from each thread with thread:get.
seen = {}
ids_file = nil

function init(args)
   n = tonumber(args[1])
   local s = tonumber(args[2])
   local seed = tonumber(args[3] or "1")
   ids_file = args[4]
   if n == nil or n < 1 or s == nil or s <= 0 then
      error("zipf.lua: arguments: N S [SEED]")
   end
   cdf = {}
   local total = 0
   for k = 1, n do
      total = total + k ^ -s
      cdf[k] = total
   end
   for k = 1, n do
      cdf[k] = cdf[k] / total
   end
   cdf[n] = 1
   math.randomseed(seed * 1009 + thread_number)
end

function request()
   local u = math.random()
   local lo, hi = 1, n
   while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if cdf[mid] < u then
         lo = mid + 1
      else
         hi = mid
      end
   end
   seen[lo] = true
   return wrk.format("GET", "/item/" .. lo)
end

function done(summary, latency, requests)
   local distinct, count = {}, 0
   for _, thread in ipairs(threads) do
      for id in pairs(thread:get("seen")) do
         if not distinct[id] then
            distinct[id] = true
            count = count + 1
         end
      end
   end
   local path = threads[1]:get("ids_file")
   if path then
      local f = assert(io.open(path, "w"))
      for id in pairs(distinct) do
         f:write(id, "\n")
      end
      f:close()
   end
   local e = summary.errors
   io.write(string.format(
      '{"requests":%d,"duration_us":%d,"bytes":%d,"non_2xx":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},"distinct_ids":%d}\n',
      summary.requests, summary.duration, summary.bytes, e.status,
      e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
      count))
end
