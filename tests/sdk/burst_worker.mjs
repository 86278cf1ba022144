// One of the processes of the SDK burst (sdk_test.mjs): sends its share of
// the requests with an official SDK, retries off, all at once, as fast as it
// can. It loads the SDK, prints "ready", waits for a line on stdin (so that
// every worker starts together), fires, and prints one JSON line:
//   {"results": [{"api", "start", "end", "status", "error"}...]}
// with times in epoch milliseconds (performance.timeOrigin + now(), so that
// the processes' times can be compared).
//
// argv[2]: JSON {"url", "key", "anthropic": N, "openai": N}.

import { createInterface } from 'node:readline';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';

const job = JSON.parse(process.argv[2]);
const anthropic = new Anthropic({ baseURL: job.url, apiKey: job.key, maxRetries: 0 });
const openai = new OpenAI({ baseURL: `${job.url}/v1`, apiKey: job.key, maxRetries: 0 });
const now = () => performance.timeOrigin + performance.now();
const messages = [{ role: 'user', content: 'Say something short.' }];

async function one(api) {
  const start = now();
  try {
    if (api === 'anthropic') {
      await anthropic.messages.create({ model: 'claude-sonnet-4', max_tokens: 16, messages });
    } else {
      await openai.chat.completions.create({ model: 'gpt-4o-mini', max_tokens: 16, messages });
    }
    return { api, start, end: now(), status: 200 };
  } catch (err) {
    return { api, start, end: now(), status: err.status ?? 0, error: String(err.message ?? err) };
  }
}

const apis = [];
for (let i = 0; i < Math.max(job.anthropic, job.openai); ++i) {
  if (i < job.anthropic) apis.push('anthropic');
  if (i < job.openai) apis.push('openai');
}
console.log('ready');
const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once('line', resolve));
lines.close();
const results = await Promise.all(apis.map(one));
process.stdout.write(`${JSON.stringify({ results })}\n`);
