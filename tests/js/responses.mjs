// Responses API clients in JavaScript against localxai: the Vercel AI SDK's xAI provider
// (xai.responses(...) with generateText and streamText) and the openai package.
// Usage: node responses.mjs BASE_URL API_KEY MODEL — prints one JSON line of what each client saw.
import { createXai } from "@ai-sdk/xai";
import { generateText, streamText } from "ai";
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const xai = createXai({ baseURL, apiKey });
const out = {};
// Greedy: the default model samples at temperature 1 otherwise, and a sampled end of turn first is an empty answer.

const generated = await generateText({ model: xai.responses(model), prompt: "Say hello.", maxOutputTokens: 8, temperature: 0 });
out.generateText = { text: generated.text, inputTokens: generated.usage.inputTokens, finish: generated.finishReason };

const streamed = streamText({ model: xai.responses(model), prompt: "Count to three.", maxOutputTokens: 8, temperature: 0 });
let text = "";
for await (const delta of streamed.textStream) text += delta;
out.streamText = { text, finish: await streamed.finishReason, usage: await streamed.usage };

const client = new OpenAI({ baseURL, apiKey });
const first = await client.responses.create({ model, input: "Name a city.", max_output_tokens: 8, temperature: 0 });
const second = await client.responses.create({
  model, input: "Another one?", previous_response_id: first.id, max_output_tokens: 8, temperature: 0,
});
out.openai = {
  first: first.output_text, second: second.output_text, firstStatus: first.status,
  firstInput: first.usage.input_tokens, secondInput: second.usage.input_tokens,
  cached: second.usage.input_tokens_details.cached_tokens,
};
console.log(JSON.stringify(out));
