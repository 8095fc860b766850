// "Show code": one chat request as curl, OpenAI Python or xai-sdk Python, ready to paste, aimed at
// this localxai server or at xAI itself (https://api.x.ai/v1, gRPC api.x.ai). With server-side tools on,
// the REST snippets use the Responses API (where xAI runs those tools) and xai-sdk its tool helpers.

const XAI_REST = "https://api.x.ai/v1";
const LOOPBACK_GRPC = /^localhost:\d+$/;

// ----- Python literals from JSON values -----

function pyCompact(value) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value); // JSON escapes are Python's
  if (Array.isArray(value)) return `[${value.map(pyCompact).join(", ")}]`;
  return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pyCompact(v)}`).join(", ")}}`;
}

export function py(value, depth = 0) {
  const compact = pyCompact(value);
  if (compact.length + depth * 4 <= 88 || value === null || typeof value !== "object") return compact;
  const pad = "    ".repeat(depth + 1);
  const end = "    ".repeat(depth);
  const items = Array.isArray(value)
    ? value.map((v) => pad + py(v, depth + 1))
    : Object.entries(value).map(([k, v]) => `${pad}${JSON.stringify(k)}: ${py(v, depth + 1)}`);
  const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  return `${open}\n${items.join(",\n")},\n${end}${close}`;
}

function kwargs(entries, depth) {
  const pad = "    ".repeat(depth);
  return entries.map(([name, value]) => `${pad}${name}=${value},`).join("\n");
}

function apiKeyExpr(options) {
  // With no keys configured localxai takes any token; say so in code that runs as pasted.
  return options.target === "local" && !options.keyRequired
    ? 'os.getenv("XAI_API_KEY", "local")'
    : 'os.environ["XAI_API_KEY"]';
}

function curlKey(options) {
  // An unset XAI_API_KEY would send "Bearer " and a 401 even where any token is taken.
  return options.target === "local" && !options.keyRequired ? "${XAI_API_KEY:-local}" : "$XAI_API_KEY";
}

function restBase(options) {
  return options.target === "xai" ? XAI_REST : options.baseUrl;
}

// ----- curl -----

function curl(api, body, options) {
  const json = JSON.stringify(body, null, 2);
  return [
    `curl ${restBase(options)}/${api === "chat" ? "chat/completions" : "responses"} \\`,
    '  -H "Content-Type: application/json" \\',
    `  -H "Authorization: Bearer ${curlKey(options)}" \\`,
    "  --no-buffer \\",
    "  -d @- <<'JSON'",
    json,
    "JSON",
  ].join("\n");
}

// ----- OpenAI Python -----

function openaiClient(options) {
  return [
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(api_key=${apiKeyExpr(options)}, base_url=${JSON.stringify(restBase(options))}, timeout=3600)`,
    "",
  ];
}

function openai(body, options) {
  const { model, messages, stream, stream_options: streamOptions, ...rest } = body;
  const args = [["model", py(model, 1)], ["messages", py(messages, 1)]];
  for (const [name, value] of Object.entries(rest)) args.push([name, py(value, 1)]);
  args.push(["stream", py(Boolean(stream))]);
  if (streamOptions) args.push(["stream_options", py(streamOptions, 1)]);
  const lines = [
    ...openaiClient(options),
    "stream = client.chat.completions.create(",
    kwargs(args, 1),
    ")",
    "for chunk in stream:",
    "    if chunk.choices:",
    "        delta = chunk.choices[0].delta",
    "        if delta.content:",
    '            print(delta.content, end="", flush=True)',
  ];
  if (body.tools) {
    lines.push("        for call in delta.tool_calls or []:");
    lines.push('            print(call.function.name or "", call.function.arguments or "", end="", flush=True)');
  }
  lines.push(
    "        if chunk.choices[0].finish_reason:",
    '            print("\\nfinish_reason:", chunk.choices[0].finish_reason)',
    "    if chunk.usage:",
    '        print("usage:", chunk.usage)',
  );
  return lines.join("\n");
}

function openaiResponses(body, options) {
  const { model, input, stream, ...rest } = body;
  const args = [["model", py(model, 1)], ["input", py(input, 1)]];
  for (const [name, value] of Object.entries(rest)) args.push([name, py(value, 1)]);
  args.push(["stream", py(Boolean(stream))]);
  return [
    ...openaiClient(options),
    "stream = client.responses.create(",
    kwargs(args, 1),
    ")",
    "for event in stream:",
    '    if event.type == "response.output_text.delta":',
    '        print(event.delta, end="", flush=True)',
    '    elif event.type == "response.output_item.done" and event.item.type.endswith("_call"):',
    '        print(f"\\n[{event.item.type}]", event.item.model_dump_json(exclude_none=True), flush=True)',
    '    elif event.type in ("response.completed", "response.incomplete"):',
    '        print("\\nstatus:", event.response.status)',
    '        print("usage:", event.response.usage)',
  ].join("\n");
}

// ----- xai-sdk Python (gRPC) -----

function textOf(content) {
  if (typeof content === "string") return content;
  return (content || []).filter((p) => p.type === "text").map((p) => p.text).join("");
}

function sdkMessage(message, names) {
  if (message.role === "system") {
    names.add("system");
    return `system(${py(textOf(message.content))})`;
  }
  if (message.role === "tool") {
    names.add("tool_result");
    return `tool_result(${py(message.content)}, tool_call_id=${py(message.tool_call_id)})`;
  }
  if (message.role === "assistant") {
    if (message.tool_calls && message.tool_calls.length) {
      names.add("chat_pb2");
      const calls = message.tool_calls.map((c) =>
        `chat_pb2.ToolCall(id=${py(c.id)}, function=chat_pb2.FunctionCall(name=${py(c.function.name)}, ` +
        `arguments=${py(c.function.arguments)}))`);
      const content = message.content ? `[chat_pb2.Content(text=${py(message.content)})]` : "[]";
      return `chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, content=${content}, tool_calls=[${calls.join(", ")}])`;
    }
    names.add("assistant");
    return `assistant(${py(textOf(message.content))})`;
  }
  names.add("user");
  if (typeof message.content === "string") return `user(${py(message.content)})`;
  const parts = message.content.map((p) => {
    if (p.type === "text") return py(p.text);
    names.add("image");
    const detail = p.image_url.detail ? `, detail=${py(p.image_url.detail)}` : "";
    return `image(${py(p.image_url.url)}${detail})`;
  });
  return `user(${parts.join(", ")})`;
}

function sdkTool(entry, names) {
  names.add("tool");
  const f = entry.function || entry;
  return `tool(name=${py(f.name)}, description=${py(f.description || "")}, parameters=${py(f.parameters || {}, 2)})`;
}

// xai_sdk.tools helpers for the server-side tools, and the `include` that returns their outputs.
const SDK_TOOLS = {
  code_interpreter: () => ["code_execution()", "code_execution", "code_execution_call_output"],
  web_search: () => ["web_search()", "web_search", "web_search_call_output"],
  mcp: (t) => {
    const allowed = t.allowed_tools ? `, allowed_tool_names=${py(t.allowed_tools)}` : "";
    return [`mcp(server_url=${py(t.server_url)}, server_label=${py(t.server_label)}${allowed})`, "mcp", "mcp_call_output"];
  },
};

function xaiSdk(body, options, server = []) {
  const names = new Set();
  const messages = body.messages.map((m) => `        ${sdkMessage(m, names)},`);
  const args = [["model", py(body.model)], ["messages", `[\n${messages.join("\n")}\n    ]`]];
  if (body.max_tokens !== undefined) args.push(["max_tokens", py(body.max_tokens)]);
  if (body.temperature !== undefined) args.push(["temperature", py(body.temperature)]);
  if (body.top_p !== undefined) args.push(["top_p", py(body.top_p)]);
  if (body.reasoning_effort !== undefined) args.push(["reasoning_effort", py(body.reasoning_effort)]);
  let schema = null;
  if (body.response_format && body.response_format.type === "json_schema") {
    names.add("chat_pb2");
    schema = body.response_format.json_schema.schema;
    args.push(["response_format", "chat_pb2.ResponseFormat(format_type=chat_pb2.FORMAT_TYPE_JSON_SCHEMA, " +
      "schema=json.dumps(SCHEMA))"]);
  }
  const tools = (body.tools || []).map((t) => sdkTool(t, names));
  const helpers = new Set();
  const include = [];
  for (const t of server) {
    const [call, helper, output] = SDK_TOOLS[t.type](t);
    tools.push(call);
    helpers.add(helper);
    include.push(output);
  }
  if (tools.length) args.push(["tools", `[\n${tools.map((t) => `        ${t},`).join("\n")}\n    ]`]);
  if (body.tool_choice && typeof body.tool_choice === "string") args.push(["tool_choice", py(body.tool_choice)]);
  if (include.length) args.push(["include", py(include)]);

  let host = "";
  if (options.target === "local") {
    const insecure = LOOPBACK_GRPC.test(options.grpcHost) ? "" : ", use_insecure_channel=True";
    host = `, api_host=${py(options.grpcHost)}${insecure}`;
  }
  const chatHelpers = [...names].filter((n) => n !== "chat_pb2").sort();
  const lines = [schema ? "import json\nimport os" : "import os", "", "from xai_sdk import Client"];
  if (chatHelpers.length) lines.push(`from xai_sdk.chat import ${chatHelpers.join(", ")}`);
  if (names.has("chat_pb2")) lines.push("from xai_sdk.proto import chat_pb2");
  if (helpers.size) lines.push(`from xai_sdk.tools import ${[...helpers].sort().join(", ")}`);
  lines.push("");
  if (schema) lines.push(`SCHEMA = ${py(schema)}`, "");
  lines.push(
    `client = Client(api_key=${apiKeyExpr(options)}${host}, timeout=3600)`,
    "",
    "chat = client.chat.create(",
    kwargs(args, 1),
    ")",
    "for response, chunk in chat.stream():",
    '    print(chunk.content, end="", flush=True)',
    "print()",
  );
  if (tools.length) lines.push("for call in response.tool_calls:", '    print("tool call:", call.function.name, call.function.arguments)');
  if (server.length) {
    lines.push(
      "for output in response.tool_outputs:",
      '    print("tool output:", output.message.content)',
      'print("citations:", list(response.citations))',
      'print("server-side tools used:", response.server_side_tool_usage)',
    );
  }
  lines.push('print("finish_reason:", response.finish_reason)', 'print("usage:", response.usage)');
  return lines.join("\n");
}

// ----- the choice -----

export function snippet(lang, request, options) {
  // request: {api: "chat" | "responses", body: what the playground sends, chat: its Chat Completions form,
  // server: the server-side tools in it}.
  let body = request.body;
  let outputs = "";
  if (request.api === "responses" && options.target === "xai" && body.include) {
    // xAI's REST API returns no server-side tool outputs (its only include is reasoning.encrypted_content).
    const { include, ...rest } = body;
    body = rest;
    outputs = " xAI's REST API does not return what server-side tools output; xai-sdk's include does.";
  }
  const key = options.target === "local" && !options.keyRequired
    ? "This server has no keys configured: any XAI_API_KEY works (the code falls back to \"local\")."
    : `Set XAI_API_KEY to your ${options.target === "xai" ? "xAI" : "localxai"} API key.`;
  const model = options.target === "xai"
    ? ` At xAI the model must be one of xAI's (${body.model} may be a local name; localxai aliases such as grok-4 help).`
    : "";
  if (lang === "xai") {
    return { code: xaiSdk(request.chat, options, request.server), note: `pip install xai-sdk (gRPC). ${key}${model}` };
  }
  if (lang === "openai") {
    const code = request.api === "chat" ? openai(body, options) : openaiResponses(body, options);
    return { code, note: `pip install openai. ${key}${model}${outputs}` };
  }
  return { code: curl(request.api, body, options), note: `${key}${model}${outputs}` };
}
