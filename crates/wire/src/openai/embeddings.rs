//! Embeddings: <https://platform.openai.com/docs/api-reference/embeddings/create> and
//! <https://platform.openai.com/docs/api-reference/embeddings/object>.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{err, parse_object, required_string, to_bytes};
use crate::canonical::{EmbeddingsRequest, EmbeddingsResponse, Usage};
use crate::error::{DecodeError, RequestError};

#[derive(Deserialize)]
struct EmbeddingsIn {
    model: Option<String>,
    input: Option<Value>,
    encoding_format: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// Reads the token ids of a token-array embeddings input as text, so that the canonical
/// request (and everything downstream: size estimates, providers) stays text. The wire
/// crate has no tokenizer: the gateway provides one (cl100k_base).
pub trait TokenDecoder {
    /// The encoding's name, for error messages (`cl100k_base`).
    fn encoding(&self) -> &str;
    /// The text of `tokens`, or `Err(i)` when `tokens[i]` is not a token of the encoding.
    fn decode(&self, tokens: &[u32]) -> Result<String, usize>;
}

/// Parses an OpenAI embeddings request. `input` is a string, an array of strings, an
/// array of token ids (one input) or an array of arrays of token ids; token ids are read
/// as text by `tokens`. `encoding_format: "base64"` is kept in `extra` (see
/// [`wants_base64`]).
pub fn parse_embeddings_request(
    body: &[u8],
    tokens: &dyn TokenDecoder,
) -> Result<EmbeddingsRequest, RequestError> {
    let raw: EmbeddingsIn = parse_object(body)?;
    let model = required_string(raw.model, "model")?;
    let input = match raw.input {
        None | Some(Value::Null) => return Err(err("input", "`input` is required")),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(err("input", "`input` must not be empty"));
        }
        Some(Value::Array(items)) => array_input(items, tokens)?,
        Some(_) => {
            return Err(err(
                "input",
                "`input` must be a string, an array of strings, an array of token ids or an \
                 array of arrays of token ids",
            ));
        }
    };
    let mut extra = raw.extra;
    match raw.encoding_format.as_deref() {
        None | Some("float") => {}
        Some("base64") => {
            extra.insert("encoding_format".into(), json!("base64"));
        }
        Some(other) => {
            return Err(err(
                "encoding_format",
                format!("unknown encoding_format `{other}`; expected float or base64"),
            ));
        }
    }
    Ok(EmbeddingsRequest {
        model,
        input,
        extra,
    })
}

/// A non-empty array `input`: all strings, all token ids (one input) or all arrays of
/// token ids; its first item decides which.
fn array_input(items: Vec<Value>, tokens: &dyn TokenDecoder) -> Result<Vec<String>, RequestError> {
    let (expected, kind) = match &items[0] {
        Value::String(_) => ("a string", Kind::Strings),
        Value::Number(_) => ("a token id", Kind::Tokens),
        Value::Array(_) => ("an array of token ids", Kind::TokenArrays),
        _ => {
            return Err(err(
                "input[0]",
                "`input[0]` must be a string, a token id or an array of token ids",
            ));
        }
    };
    let mixed = |j: usize| {
        err(
            format!("input[{j}]"),
            format!(
                "`input[{j}]` must be {expected} like `input[0]`: an array `input` holds only \
                 strings, only token ids or only arrays of token ids"
            ),
        )
    };
    match kind {
        Kind::Strings => items
            .into_iter()
            .enumerate()
            .map(|(j, item)| match item {
                Value::String(s) => Ok(s),
                _ => Err(mixed(j)),
            })
            .collect(),
        Kind::Tokens => {
            let ids = items
                .iter()
                .enumerate()
                .map(|(j, item)| match item {
                    Value::Number(_) => token_id(item, &format!("input[{j}]")),
                    _ => Err(mixed(j)),
                })
                .collect::<Result<Vec<u32>, _>>()?;
            Ok(vec![decode(&ids, tokens, |k| format!("input[{k}]"))?])
        }
        Kind::TokenArrays => items
            .iter()
            .enumerate()
            .map(|(j, item)| {
                let Value::Array(inner) = item else {
                    return Err(mixed(j));
                };
                if inner.is_empty() {
                    return Err(err(
                        format!("input[{j}]"),
                        format!("`input[{j}]` must not be empty"),
                    ));
                }
                let ids = inner
                    .iter()
                    .enumerate()
                    .map(|(k, v)| token_id(v, &format!("input[{j}][{k}]")))
                    .collect::<Result<Vec<u32>, _>>()?;
                decode(&ids, tokens, |k| format!("input[{j}][{k}]"))
            })
            .collect(),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Strings,
    TokenArrays,
    Tokens,
}

/// A token id: an integer in `0..=u32::MAX`.
fn token_id(v: &Value, param: &str) -> Result<u32, RequestError> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            err(
                param,
                format!("`{param}` must be a token id (a non-negative integer)"),
            )
        })
}

/// The text of one token-array input; an unknown id is refused, naming its position.
fn decode(
    ids: &[u32],
    tokens: &dyn TokenDecoder,
    param: impl Fn(usize) -> String,
) -> Result<String, RequestError> {
    tokens.decode(ids).map_err(|k| {
        let p = param(k);
        let id = ids.get(k).copied().unwrap_or_default();
        err(
            p.clone(),
            format!(
                "`{p}` ({id}) is not a token of the {} encoding",
                tokens.encoding()
            ),
        )
    })
}

/// The client asked for base64 embeddings (answer with [`encode_embeddings_response_base64`]).
pub fn wants_base64(req: &EmbeddingsRequest) -> bool {
    req.extra.get("encoding_format").and_then(Value::as_str) == Some("base64")
}

#[derive(Serialize)]
struct EmbeddingsListOut<'a> {
    object: &'static str,
    data: Vec<EmbeddingItemOut<'a>>,
    model: &'a str,
    usage: EmbeddingsUsageJson,
}

#[derive(Serialize)]
struct EmbeddingItemOut<'a> {
    object: &'static str,
    index: usize,
    embedding: Vector<'a>,
}

/// Serialized as `f32` (shortest round-trip form), not widened to `f64`.
#[derive(Serialize)]
#[serde(untagged)]
enum Vector<'a> {
    Floats(&'a [f32]),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingsUsageJson {
    prompt_tokens: u64,
    total_tokens: u64,
}

fn embeddings_body<'a>(
    resp: &'a EmbeddingsResponse,
    vector: impl Fn(&'a [f32]) -> Vector<'a>,
) -> Vec<u8> {
    let list = EmbeddingsListOut {
        object: "list",
        data: resp
            .data
            .iter()
            .enumerate()
            .map(|(index, e)| EmbeddingItemOut {
                object: "embedding",
                index,
                embedding: vector(e),
            })
            .collect(),
        model: &resp.model,
        usage: EmbeddingsUsageJson {
            prompt_tokens: resp.usage.input_tokens,
            total_tokens: resp.usage.input_tokens + resp.usage.output_tokens,
        },
    };
    serde_json::to_vec(&list).unwrap_or_default()
}

/// An OpenAI embeddings `list` with float vectors.
pub fn encode_embeddings_response(resp: &EmbeddingsResponse) -> Vec<u8> {
    embeddings_body(resp, Vector::Floats)
}

/// An OpenAI embeddings `list` with base64 vectors (little-endian `f32`s), as
/// `encoding_format: "base64"` asks.
pub fn encode_embeddings_response_base64(resp: &EmbeddingsResponse) -> Vec<u8> {
    embeddings_body(resp, |e| {
        let bytes: Vec<u8> = e.iter().flat_map(|f| f.to_le_bytes()).collect();
        Vector::Base64(b64_encode(&bytes))
    })
}

/// An embeddings request body for `model`. Always asks for floats.
pub fn encode_embeddings_request(req: &EmbeddingsRequest, model: &str) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("input".into(), json!(req.input));
    for (k, v) in &req.extra {
        if k != "encoding_format" && !body.contains_key(k) {
            body.insert(k.clone(), v.clone());
        }
    }
    to_bytes(&Value::Object(body))
}

#[derive(Deserialize)]
struct EmbeddingsOut {
    data: Vec<EmbeddingOut>,
    model: Option<String>,
    usage: Option<EmbeddingsUsageOut>,
}

#[derive(Deserialize)]
struct EmbeddingOut {
    index: Option<usize>,
    embedding: Value,
}

#[derive(Deserialize)]
struct EmbeddingsUsageOut {
    prompt_tokens: Option<u64>,
}

/// Reads an embeddings `list` (OpenAI or Mistral); float or base64 vectors.
pub fn decode_embeddings_response(body: &[u8]) -> Result<EmbeddingsResponse, DecodeError> {
    let raw: EmbeddingsOut =
        serde_json::from_slice(body).map_err(|e| DecodeError::new("embeddings response", e))?;
    let mut items: Vec<(usize, Vec<f32>)> = Vec::with_capacity(raw.data.len());
    for (i, d) in raw.data.into_iter().enumerate() {
        let vector = match d.embedding {
            Value::String(s) => {
                let bytes = b64_decode(&s).filter(|b| b.len() % 4 == 0).ok_or_else(|| {
                    DecodeError::new("embeddings response", "bad base64 embedding")
                })?;
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            other => serde_json::from_value(other)
                .map_err(|e| DecodeError::new("embeddings response", e))?,
        };
        items.push((d.index.unwrap_or(i), vector));
    }
    items.sort_by_key(|(i, _)| *i);
    Ok(EmbeddingsResponse {
        model: raw.model.unwrap_or_default(),
        data: items.into_iter().map(|(_, v)| v).collect(),
        usage: Usage {
            input_tokens: raw.usage.and_then(|u| u.prompt_tokens).unwrap_or(0),
            output_tokens: 0,
            ..Default::default()
        },
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(super) fn b64_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for k in 0..4 {
            if k <= c.len() {
                s.push(char::from(B64[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

pub(super) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u32> = s
        .bytes()
        .filter(|&b| b != b'=')
        .map(|b| {
            B64.iter()
                .position(|&d| d == b)
                .and_then(|p| u32::try_from(p).ok())
        })
        .collect::<Option<_>>()?;
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for c in digits.chunks(4) {
        if c.len() == 1 {
            return None;
        }
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (k, d)| n | (d << (18 - 6 * k)));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..c.len()]);
    }
    Some(out)
}
