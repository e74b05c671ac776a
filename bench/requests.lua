-- wrk script: cycle through a request file (METHOD \t PATH \t SIGNATURE \t BODY a line),
-- count every response that is not 2xx, and print one JSON line at the end.
-- Arguments after `--`: the file, the number of wrk threads, then extra "Name: value" headers.
-- Thread k takes lines k, k+T, k+2T... so no two threads send the same delivery.

local threads = {}
local next_thread = 0

function setup(thread)
   thread:set("thread_index", next_thread)
   next_thread = next_thread + 1
   table.insert(threads, thread)
end

local requests = {}
local count = 0
local position = 0
ok = 0
bad = 0
wrapped = 0
corpus = 0
first_bad = ""

function init(args)
   local file = args[1]
   local thread_count = tonumber(args[2])
   local extra = {}
   for i = 3, #args do
      local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
      extra[name] = value
   end
   local line_number = 0
   for line in io.lines(file) do
      if line_number % thread_count == thread_index then
         local t1 = string.find(line, "\t", 1, true)
         local t2 = string.find(line, "\t", t1 + 1, true)
         local t3 = string.find(line, "\t", t2 + 1, true)
         local method = string.sub(line, 1, t1 - 1)
         local path = string.sub(line, t1 + 1, t2 - 1)
         local signature = string.sub(line, t2 + 1, t3 - 1)
         local body = string.sub(line, t3 + 1)
         local headers = {}
         for name, value in pairs(extra) do
            headers[name] = value
         end
         if body ~= "" then
            headers["Content-Type"] = "application/json"
         else
            body = nil
         end
         if signature ~= "" then
            headers["videosdk-signature"] = signature
         end
         count = count + 1
         requests[count] = wrk.format(method, path, headers, body)
      end
      line_number = line_number + 1
   end
   corpus = count
   if count == 0 then
      error("no requests for thread " .. thread_index .. " in " .. file)
   end
end

function request()
   position = position + 1
   if position > count then
      position = 1
      wrapped = wrapped + 1
   end
   return requests[position]
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      ok = ok + 1
   else
      bad = bad + 1
      if first_bad == "" then
         first_bad = status .. " " .. string.sub(body or "", 1, 300)
      end
   end
end

local function json_string(text)
   text = string.gsub(text, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end)
   return '"' .. text .. '"'
end

function done(summary, latency, _requests)
   local total_ok, total_bad, total_wrapped, total_corpus = 0, 0, 0, 0
   local sample = ""
   for _, thread in ipairs(threads) do
      total_ok = total_ok + thread:get("ok")
      total_bad = total_bad + thread:get("bad")
      total_wrapped = total_wrapped + thread:get("wrapped")
      total_corpus = total_corpus + thread:get("corpus")
      local thread_bad = thread:get("first_bad")
      if sample == "" and thread_bad ~= "" then
         sample = thread_bad
      end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"duration_us":%d,"requests":%d,"ok":%d,"bad":%d,"wrapped":%d,"corpus":%d,'
      .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},"first_bad":%s}\n',
      summary.duration, summary.requests, total_ok, total_bad, total_wrapped, total_corpus,
      e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, json_string(sample)))
end
