//! Bad input gets a precise 4xx with a JSON body, and writes nothing to the ledger.

use serde_json::Value;

use crate::helpers::*;

fn png_with_dimensions(width: u32, height: u32) -> Vec<u8> {
    // A PNG whose header claims huge dimensions (a decompression bomb), with valid CRCs.
    let mut png = png(1);
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn zip_bytes() -> Vec<u8> {
    // An empty zip archive: just the end-of-central-directory record.
    let mut zip = b"PK\x05\x06".to_vec();
    zip.extend_from_slice(&[0u8; 18]);
    zip
}

#[tokio::test]
async fn bad_images_are_refused_with_the_right_status_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let good = jpeg(1);
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    let mut polyglot = good.clone();
    polyglot.extend_from_slice(&zip_bytes());
    let mut bad_crc = png(2);
    let last = bad_crc.len() - 20;
    bad_crc[last] ^= 0xFF;

    let cases: Vec<(&str, Vec<u8>, &str, u16)> = vec![
        ("zero bytes", Vec::new(), "image/jpeg", 400),
        ("truncated JPEG", truncated, "image/jpeg", 422),
        ("PNG claiming 60000x60000", png_with_dimensions(60_000, 60_000), "image/png", 422),
        ("text named .jpg", b"hello, this is not a picture".to_vec(), "image/jpeg", 415),
        ("HTML named .jpg", b"<!doctype html><html><body>hi</body></html>".to_vec(), "image/jpeg", 415),
        ("zip", zip_bytes(), "application/zip", 415),
        ("SVG", b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>".to_vec(), "image/svg+xml", 415),
        ("PDF", b"%PDF-1.7\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n".to_vec(), "application/pdf", 415),
        ("JPEG with a zip appended", polyglot, "image/jpeg", 422),
        ("PNG with a bad CRC", bad_crc, "image/png", 422),
    ];
    for (what, bytes, content_type, expected) in cases {
        let response = app.upload_as(&app.camera_token, bytes, content_type).await;
        assert_eq!(response.status().as_u16(), expected, "{what}");
        let body: Value = response.json().await.unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        assert!(body["error"].is_string() && body["message"].is_string(), "{what}: {body}");
    }
    assert_eq!(seqs_in_git(&app.git_dir()), Vec::<u64>::new(), "a rejected upload writes nothing");
}

#[tokio::test]
async fn a_body_over_the_limit_answers_413_without_writing() {
    let app = TestApp::spawn_with(&["--max-body-bytes", "100000"]).await;
    // A declared Content-Length over the limit is answered before a byte of the body is read
    // (this client sends none at all).
    let answer = send_raw(&app, "content-length: 300000\r\n", &[]).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");

    // Streamed without a Content-Length (chunked), the limit still holds: the server answers
    // 413 as soon as the limit is passed. A raw socket shows the answer even though the
    // server stops reading (an HTTP client library would report the broken pipe instead).
    let mut chunked = Vec::new();
    for _ in 0..30 {
        chunked.extend_from_slice(format!("{:x}\r\n", 10_000).as_bytes());
        chunked.extend(std::iter::repeat_n(0u8, 10_000));
        chunked.extend_from_slice(b"\r\n");
    }
    let answer = send_raw(&app, "transfer-encoding: chunked\r\n", &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    assert_eq!(seqs_in_git(&app.git_dir()), Vec::<u64>::new());
    // A small image still goes through.
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
}

#[tokio::test]
async fn a_bad_captured_at_header_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let response = app.upload_captured_at(jpeg(1), "last tuesday").await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_captured_at");
}

/// Sends an upload over a raw socket (headers plus `extra_headers`, then `body` in pieces)
/// and returns what the server answered. An HTTP client library would report the broken
/// pipe of a server that answers early and stops reading, instead of its answer.
async fn send_raw(app: &TestApp, extra_headers: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/images HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: image/jpeg\r\n{extra_headers}\r\n",
        app.camera_token
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    for piece in body.chunks(16 * 1024) {
        // The server may stop reading (and close) once it has answered: that is the point.
        if socket.write_all(piece).await.is_err() {
            break;
        }
    }
    let mut answer = vec![0u8; 64 * 1024];
    let mut len = 0;
    // Read what arrives until the server closes (or resets) the connection.
    while let Ok(Ok(n)) =
        tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut answer[len..])).await
    {
        if n == 0 {
            break;
        }
        len += n;
    }
    String::from_utf8_lossy(&answer[..len]).into_owned()
}
