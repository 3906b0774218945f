//! Upstreams that misbehave on purpose, written on raw TCP so every byte is under the
//! test's control. They speak OpenAI's format when they speak at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// 200 with a body that is not JSON.
    Garbage,
    /// Reads the request, never answers.
    Hang,
    /// Reads the request, closes the connection without a response.
    Reset,
    /// Answers with this status and OpenAI's error body.
    Status(u16),
    /// Streams one chunk, then closes without `[DONE]`.
    CloseMidStream,
    /// Streams one chunk, then goes silent with the connection open.
    StallMidStream,
    /// Streams, in one write: an id-less content-filter chunk (as Azure OpenAI opens
    /// with), one chunk, an error chunk, then a chunk and `[DONE]` after the error.
    ErrorMidStream,
    /// Streams, chunked and in one write: five chunks ("a" to "e"), then one that is not
    /// JSON, then `[DONE]`.
    MalformedInBurst,
    /// Anthropic's format (`kind: anthropic`, `base_url` without `/v1`): a stream that
    /// starts (`message_start`, a text block, "partial"), then sends an `error` event,
    /// then more text and `message_stop` that must not reach the client.
    AnthropicErrorMidStream,
    /// Anthropic's format: a stream that starts ("partial"), then closes without
    /// `message_delta` or `message_stop`.
    AnthropicCloseMidStream,
    /// Anthropic's format: a stream that starts ("partial"), sends a `ping`, pauses
    /// 600 ms (a model thinking), then ends with " more" and `message_stop`.
    AnthropicPingThenPause,
    /// A healthy upstream whose reply carries an e-mail address and a card number, in a
    /// stream split in the middle of each (or whole, for a non-streaming request).
    LeaksPii,
}

/// A running fault upstream.
pub struct FaultUpstream {
    /// Base URL for `kind: openai` (`http://127.0.0.1:PORT/v1`).
    pub base_url: String,
    pub hits: Arc<AtomicU64>,
}

pub async fn start(fault: Fault) -> FaultUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let _ = handle(sock, fault, &h).await;
            });
        }
    });
    FaultUpstream {
        base_url: format!("http://{addr}/v1"),
        hits,
    }
}

async fn read_request(sock: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(buf);
            }
        }
    }
}

const CHUNK: &str = r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"partial"},"finish_reason":null}]}"#;

/// The start of an Anthropic stream: `message_start`, a text block, "partial".
const ANTHROPIC_START: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"partial\"}}\n\n",
);

async fn handle(mut sock: TcpStream, fault: Fault, hits: &AtomicU64) -> std::io::Result<()> {
    let request = read_request(&mut sock).await?;
    hits.fetch_add(1, Ordering::SeqCst);
    match fault {
        Fault::AnthropicPingThenPause => {
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
            sock.write_all(format!("{head}{ANTHROPIC_START}").as_bytes())
                .await?;
            sock.flush().await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            sock.write_all(b"event: ping\ndata: {\"type\":\"ping\"}\n\n")
                .await?;
            sock.flush().await?;
            tokio::time::sleep(Duration::from_millis(600)).await;
            sock.write_all(concat!(
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" more\"}}\n\n",
                "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2}}\n\n",
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ).as_bytes()).await?;
            sock.flush().await?;
        }
        Fault::AnthropicErrorMidStream | Fault::AnthropicCloseMidStream => {
            let mut resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{ANTHROPIC_START}"
            );
            if matches!(fault, Fault::AnthropicErrorMidStream) {
                resp.push_str(concat!(
                    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
                    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"after the error\"}}\n\n",
                    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                ));
            }
            sock.write_all(resp.as_bytes()).await?;
            sock.flush().await?;
        }
        Fault::LeaksPii => {
            let streaming = String::from_utf8_lossy(&request).contains("\"stream\":true");
            if streaming {
                let pieces = [
                    "Write to jo",
                    "hn.doe@example.com or pay with 4111 1111 ",
                    "1111 1111 today.",
                ];
                let mut body = String::new();
                for (i, p) in pieces.iter().enumerate() {
                    let role = if i == 0 { r#""role":"assistant","# } else { "" };
                    body.push_str(&format!(
                        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{{role}\"content\":\"{p}\"}},\"finish_reason\":null}}]}}\n\n"
                    ));
                }
                body.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
                body.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":9,\"total_tokens\":14}}\n\ndata: [DONE]\n\n");
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                sock.write_all(head.as_bytes()).await?;
                for part in body.split_inclusive("\n\n") {
                    sock.write_all(part.as_bytes()).await?;
                    sock.flush().await?;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            } else {
                let body = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Write to john.doe@example.com or pay with 4111 1111 1111 1111 today."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14}}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(resp.as_bytes()).await?;
            }
        }
        Fault::Garbage => {
            sock.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\nnot json!",
            )
            .await?;
        }
        Fault::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
        Fault::Reset => {
            drop(sock);
        }
        Fault::Status(status) => {
            let body = r#"{"error":{"message":"injected failure","type":"server_error","param":null,"code":null}}"#;
            let resp = format!(
                "HTTP/1.1 {status} Injected\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await?;
        }
        Fault::ErrorMidStream => {
            let filter = r#"data: {"id":"","object":"","created":0,"model":"","choices":[],"prompt_filter_results":[{"prompt_index":0}]}"#;
            let error = r#"data: {"error":{"message":"overloaded","type":"server_error","param":null,"code":null}}"#;
            let after = CHUNK.replace("partial", "after the error");
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{filter}\n\n{CHUNK}\n\n{error}\n\n{after}\n\ndata: [DONE]\n\n"
            );
            sock.write_all(resp.as_bytes()).await?;
        }
        Fault::MalformedInBurst => {
            let mut events: Vec<String> = ["a", "b", "c", "d", "e"]
                .iter()
                .map(|t| CHUNK.replace("partial", t))
                .collect();
            events.push("data: {\"id\":\"c1\",\"choices\":[".into());
            events.push("data: [DONE]".into());
            let mut resp = String::from(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            for e in events {
                let e = format!("{e}\n\n");
                resp.push_str(&format!("{:x}\r\n{e}\r\n", e.len()));
            }
            resp.push_str("0\r\n\r\n");
            sock.write_all(resp.as_bytes()).await?;
        }
        Fault::CloseMidStream | Fault::StallMidStream => {
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{CHUNK}\n\n"
            );
            sock.write_all(resp.as_bytes()).await?;
            sock.flush().await?;
            if matches!(fault, Fault::StallMidStream) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
    }
    Ok(())
}
