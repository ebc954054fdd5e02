// The Vercel AI SDK (@ai-sdk/xai, Responses API) against a live grokd: GROKD_URL is the server's
// /v1 base, GROKD_KEY an API key it accepts, GROKD_SLOW_KEY one limited to a request a minute,
// GROKD_MODEL the model id. Prints one JSON object.
// Tool calls and objects come out of the random-token test model only because grokd constrains
// generation with grammars built from the request's tools and JSON schema.
import { createXai } from '@ai-sdk/xai';
import * as ai from 'ai';
import { z } from 'zod';

const xai = createXai({ baseURL: process.env.GROKD_URL, apiKey: process.env.GROKD_KEY });
const model = xai.responses(process.env.GROKD_MODEL);
const QUESTION = 'What is the capital of France? Answer in one sentence.';
const out = {};

const gen = await ai.generateText({ model, prompt: QUESTION, maxOutputTokens: 24, temperature: 0 });
out.generate = { text: gen.text, usage: gen.usage, finishReason: gen.finishReason, responseId: gen.response?.id };

const stream = ai.streamText({ model, prompt: QUESTION, maxOutputTokens: 24, temperature: 0 });
const parts = [];
for await (const delta of stream.textStream) parts.push(delta);
out.stream = { text: parts.join(''), deltas: parts.length, usage: await stream.usage };

const weather = ai.tool({
  description: 'Current weather for a city',
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => ({ city, temperature_c: 21 }),
});
const tooled = await ai.generateText({
  model, prompt: 'What is the weather in Paris?', tools: { get_weather: weather }, maxOutputTokens: 60,
  temperature: 0, stopWhen: ai.stepCountIs(2),
  // the first step must call the tool, the second must answer in text
  prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? 'required' : 'none' }),
});
out.tool = {
  steps: tooled.steps.map((s) => ({
    toolCalls: s.toolCalls.map((c) => ({ name: c.toolName, input: c.input })),
    toolResults: s.toolResults.map((r) => ({ name: r.toolName, output: r.output })),
    text: s.text, finishReason: s.finishReason,
  })),
  text: tooled.text,
};

const City = z.object({ name: z.string(), country: z.string() });
const obj = await ai.generateObject({ model, schema: City, prompt: 'Describe Paris.', maxOutputTokens: 60,
  temperature: 0 });
out.object = { object: obj.object, parsed: City.safeParse(obj.object).success, usage: obj.usage };

// grokd's 400 and 429 must reach the caller as the SDK's own APICallError with the status
async function errorOf(call) {
  try {
    await call();
    return null;
  } catch (e) {
    return { apiCallError: ai.APICallError.isInstance(e), statusCode: e.statusCode, message: e.message,
      retryable: e.isRetryable };
  }
}
const slow = createXai({ baseURL: process.env.GROKD_URL, apiKey: process.env.GROKD_SLOW_KEY })
  .responses(process.env.GROKD_MODEL);
const once = () => ai.generateText({ model: slow, prompt: 'hi', maxOutputTokens: 1, maxRetries: 0 });
out.errors = {
  badRequest: await errorOf(() => ai.generateText({ model, prompt: QUESTION, maxOutputTokens: 5000, maxRetries: 0 })),
  first: await errorOf(once),
  rateLimited: await errorOf(once),
};

console.log(JSON.stringify(out));
