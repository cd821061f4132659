//! OpenAI chat request → Anthropic Messages request.
//!
//! System and developer messages become `system`; tool calls become
//! `tool_use` blocks and tool messages `tool_result` blocks in a user turn;
//! consecutive turns of one role are merged; images become `image` blocks
//! (base64 data URLs or plain URLs). `response_format: json_schema` becomes a
//! forced tool whose input is returned as the message content;
//! `json_object` adds a system instruction. `seed` and unknown fields have
//! no Anthropic equivalent and are dropped; `n > 1` and `logprobs` are
//! refused with a clear error.

use serde_json::{Map, Value, json};

use crate::api::types::{
    ChatCompletionRequest, ChatMessage, Content, ContentPart, ResponseFormat, ToolChoice,
    ToolChoiceMode,
};
use crate::providers::ProviderError;

/// A translated request, and whether a forced JSON tool stands in for
/// `response_format`.
pub(super) struct Translated {
    pub body: Value,
    pub json_tool: Option<String>,
}

fn unsupported(msg: impl Into<String>) -> ProviderError {
    ProviderError::Unsupported(msg.into())
}

pub(super) fn translate(
    chat: &ChatCompletionRequest,
    model: &str,
    default_max_tokens: u32,
    stream: bool,
) -> Result<Translated, ProviderError> {
    if chat.n.unwrap_or(1) > 1 {
        return Err(unsupported(
            "`n` greater than 1 is not supported by Anthropic deployments",
        ));
    }
    if chat.logprobs == Some(true) {
        return Err(unsupported(
            "`logprobs` is not supported by Anthropic deployments",
        ));
    }
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in chat.messages.iter().enumerate() {
        let (role, blocks) = match message {
            ChatMessage::System { content } | ChatMessage::Developer { content } => {
                system.push(content.text());
                continue;
            }
            ChatMessage::User { content } => ("user", content_blocks(content, i)?),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut blocks = match content {
                    Some(c) if !c.text().is_empty() => content_blocks(c, i)?,
                    _ => Vec::new(),
                };
                for (j, call) in tool_calls.iter().flatten().enumerate() {
                    let input: Value =
                        serde_json::from_str(&call.function.arguments).map_err(|_| {
                            unsupported(format!(
                                "messages[{i}].tool_calls[{j}].function.arguments is not valid JSON"
                            ))
                        })?;
                    blocks.push(json!({"type": "tool_use", "id": call.id,
                                       "name": call.function.name, "input": input}));
                }
                ("assistant", blocks)
            }
            ChatMessage::Tool {
                content,
                tool_call_id,
            } => (
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": tool_call_id,
                            "content": content.text()})],
            ),
        };
        match turns.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    let max_tokens = chat
        .max_completion_tokens
        .or(chat.max_tokens)
        .unwrap_or(default_max_tokens);
    body.insert("max_tokens".into(), json!(max_tokens));
    body.insert(
        "messages".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if let Some(t) = chat.temperature {
        // OpenAI's range is 0–2, Anthropic's 0–1.
        body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = chat.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(stop) = &chat.stop {
        body.insert("stop_sequences".into(), json!(stop.to_vec()));
    }
    if let Some(user) = &chat.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    let mut tools: Vec<Value> = chat
        .tools
        .iter()
        .flatten()
        .map(|t| {
            let mut tool = json!({"name": t.function.name, "input_schema": t.function.parameters.clone()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}))});
            if let Some(d) = &t.function.description {
                tool["description"] = json!(d);
            }
            tool
        })
        .collect();
    let mut tool_choice = match &chat.tool_choice {
        None => None,
        Some(ToolChoice::Mode(ToolChoiceMode::None)) => Some(json!({"type": "none"})),
        Some(ToolChoice::Mode(ToolChoiceMode::Auto)) => Some(json!({"type": "auto"})),
        Some(ToolChoice::Mode(ToolChoiceMode::Required)) => Some(json!({"type": "any"})),
        Some(ToolChoice::Named { function }) => {
            Some(json!({"type": "tool", "name": function.name}))
        }
    };
    let mut json_tool = None;
    match &chat.response_format {
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let schema = json_schema
                .schema
                .clone()
                .unwrap_or_else(|| json!({"type": "object"}));
            tools.push(json!({"name": json_schema.name,
                "description": "Respond with the answer as this tool's input.",
                "input_schema": schema}));
            tool_choice = Some(json!({"type": "tool", "name": json_schema.name}));
            json_tool = Some(json_schema.name.clone());
        }
        Some(ResponseFormat::JsonObject) => {
            system.push("Respond with a single JSON object and nothing else.".into());
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if chat.parallel_tool_calls == Some(false) && !tools.is_empty() {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = tool_choice {
        body.insert("tool_choice".into(), choice);
    }
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    Ok(Translated {
        body: Value::Object(body),
        json_tool,
    })
}

fn content_blocks(content: &Content, i: usize) -> Result<Vec<Value>, ProviderError> {
    match content {
        Content::Text(t) => Ok(vec![json!({"type": "text", "text": t})]),
        Content::Parts(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| match part {
                ContentPart::Text { text } => Ok(json!({"type": "text", "text": text})),
                ContentPart::ImageUrl { image_url } => Ok(image_block(&image_url.url)),
                ContentPart::Other(v) => Err(unsupported(format!(
                    "messages[{i}].content[{j}]: content part type `{}` is not supported by Anthropic deployments",
                    v.get("type").and_then(Value::as_str).unwrap_or("?")
                ))),
            })
            .collect(),
    }
}

/// `data:image/png;base64,XXXX` → a base64 source; anything else → a URL source.
fn image_block(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}});
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}
