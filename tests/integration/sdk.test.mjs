// The official openai SDK as the client: every kind of completion through the proxy, then the
// stored signatures verified over the exact bytes the SDK sent and received (captured by a
// fetch wrapper), with ethers and @noble, against the attested signing identities.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startStack, MODEL, TOKEN } from './lib/harness.mjs';
import { capturingFetch } from './lib/http.mjs';
import { attestedAddresses, checkSigned, signedText, stopAndCheck } from './lib/common.mjs';

let stack, cap, client, attested;

before(async () => {
  stack = await startStack();
  cap = capturingFetch();
  client = new OpenAI({ baseURL: stack.proxy.baseURL, apiKey: TOKEN, fetch: cap.fetch, maxRetries: 0, timeout: 20000 });
  attested = await attestedAddresses(stack.port);
});

after(async () => { await stack?.stop(); });

const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Say hello in three languages: héllo, こんにちは, привет 🚀' },
];

async function verifyLast(id) {
  const e = cap.last();
  assert.ok(e.done, 'response body fully read');
  assert.equal(e.status, 200);
  const text = signedText(e.requestBody, cap.responseBytes(e));
  return checkSigned(stack.port, id, text, { attested });
}

test('chat completion, non-streaming', async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 8 });
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, MODEL);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(r.choices[0].message.content.length > 0);
  assert.match(cap.last().responseHeaders.get('content-type'), /application\/json/);
  await verifyLast(r.id);
});

test('chat completion, streaming', async () => {
  const stream = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 6, stream: true });
  const ids = new Set();
  let content = '';
  let finish = null;
  let first = null;
  for await (const chunk of stream) {
    first ??= chunk;
    ids.add(chunk.id);
    assert.equal(chunk.object, 'chat.completion.chunk');
    for (const c of chunk.choices) {
      content += c.delta?.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(ids.size, 1, 'one id across the stream');
  const [id] = ids;
  assert.match(id, /^chatcmpl-/);
  assert.equal(first.choices[0].delta.role, 'assistant');
  assert.ok(content.length > 0, 'some content streamed');
  assert.ok(finish, 'a finish_reason arrived');
  assert.match(cap.last().responseHeaders.get('content-type'), /text\/event-stream/);
  const body = cap.responseBytes().toString('utf8');
  assert.ok(body.trimEnd().endsWith('data: [DONE]'), 'stream ends with data: [DONE]');
  await verifyLast(id);
});

test('chat completion, streaming with usage and n=2', async () => {
  const stream = await client.chat.completions.create({
    model: MODEL, messages, max_tokens: 4, n: 2, stream: true, stream_options: { include_usage: true },
  });
  const ids = new Set();
  const idx = new Set();
  let usage = null;
  for await (const chunk of stream) {
    ids.add(chunk.id);
    for (const c of chunk.choices) idx.add(c.index);
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(ids.size, 1);
  assert.deepEqual([...idx].sort(), [0, 1]);
  assert.ok(usage && usage.completion_tokens > 0, 'usage event relayed');
  await verifyLast([...ids][0]);
});

test('legacy completion, non-streaming', async () => {
  const r = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 5 });
  assert.match(r.id, /^cmpl-/);
  assert.equal(r.object, 'text_completion');
  assert.equal(typeof r.choices[0].text, 'string');
  await verifyLast(r.id);
});

test('legacy completion, streaming', async () => {
  const stream = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 5, stream: true });
  const ids = new Set();
  let text = '';
  for await (const chunk of stream) {
    ids.add(chunk.id);
    text += chunk.choices[0]?.text ?? '';
  }
  assert.equal(ids.size, 1);
  const [id] = ids;
  assert.match(id, /^cmpl-/);
  assert.ok(text.length > 0);
  await verifyLast(id);
});

test('eight concurrent streams all get their own valid signature', async () => {
  const mine = capturingFetch();
  const c2 = new OpenAI({ baseURL: stack.proxy.baseURL, apiKey: TOKEN, fetch: mine.fetch, maxRetries: 0 });
  const runs = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
    const s = await c2.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: `request number ${i}` }], max_tokens: 3 + i, stream: true,
    });
    let id;
    for await (const chunk of s) id ??= chunk.id;
    return id;
  }));
  assert.equal(new Set(runs).size, 8, 'eight distinct ids');
  for (const e of mine.log) {
    const id = JSON.parse(mine.responseBytes(e).toString().split('\n').find((l) => l.startsWith('data: {')).slice(6)).id;
    assert.ok(runs.includes(id));
    await checkSigned(stack.port, id, signedText(e.requestBody, mine.responseBytes(e)), { attested });
  }
});

test('models.list through the SDK', async () => {
  const page = await client.models.list();
  assert.ok(page.data.some((m) => m.id === MODEL), 'test-model listed');
});

test('wrong API key is an AuthenticationError (401)', async () => {
  const bad = new OpenAI({ baseURL: stack.proxy.baseURL, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(bad.chat.completions.create({ model: MODEL, messages, max_tokens: 2 }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
});

test('engine 400 surfaces as BadRequestError with the engine message', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: MODEL, messages, max_tokens: 2, mock_fault: '400' }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && typeof e.message === 'string',
  );
});

test('proxy and mock ran to the end and exit cleanly', async () => {
  await stopAndCheck(stack);
});
