//! The few S3 calls an `s3` snapshot repository makes, against the S3
//! endpoint the stand-in was given (moto in server mode, in the tests and
//! the local setup): put, get and delete one object, path-style.
//!
//! Real Elasticsearch's `repository-s3` signs with the pod's web identity
//! (IRSA) credentials; moto does not check signatures but routes by the
//! credential scope of the `Authorization` header (`.../s3/aws4_request`) and
//! refuses anonymous reads of private objects (403), so each request carries
//! a scope and an unsigned payload. `Content-Type: application/octet-stream`
//! keeps moto's web framework from reading the body as a form.
//!
//! Blocking on purpose: endpoints answer under the stand-in's lock, and the
//! server runs them on tokio's blocking pool (see `server::handle`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What S3 answered when it did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct S3Error {
    /// The HTTP status (0: no answer at all).
    pub(super) status: u16,
    /// The S3 error code (`NoSuchBucket`, ...), or what went wrong on the way.
    pub(super) code: String,
    pub(super) message: String,
}

impl S3Error {
    /// As the AWS SDK for Java prints it in Elasticsearch's `caused_by`.
    pub(super) fn aws_text(&self) -> String {
        format!(
            "{} (Service: Amazon S3; Status Code: {}; Error Code: {}; Request ID: null)",
            self.message, self.status, self.code
        )
    }
}

/// An S3 endpoint, `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct S3 {
    endpoint: String,
}

impl S3 {
    pub(super) fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
        }
    }

    pub(super) fn put(&self, bucket: &str, key: &str, body: &[u8]) -> Result<(), S3Error> {
        self.call("PUT", bucket, key, body).map(|_| ())
    }

    /// The object, or `None` when there is no such key (the bucket is there).
    pub(super) fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, S3Error> {
        match self.call("GET", bucket, key, &[]) {
            Ok(body) => Ok(Some(body)),
            Err(e) if e.code == "NoSuchKey" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates `bucket` (a test's setup; Elasticsearch never creates one).
    pub(super) fn create_bucket(&self, bucket: &str) -> Result<(), S3Error> {
        self.call("PUT", bucket, "", &[]).map(|_| ())
    }

    /// The keys under `prefix` (a test's check of what a repository wrote;
    /// ListObjectsV2, the first 1,000).
    pub(super) fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, S3Error> {
        let query = format!("?list-type=2&prefix={}", prefix.replace('/', "%2F"));
        let body = self.call("GET", bucket, &query, &[])?;
        let text = String::from_utf8_lossy(&body);
        Ok(text
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect())
    }

    pub(super) fn delete(&self, bucket: &str, key: &str) -> Result<(), S3Error> {
        self.call("DELETE", bucket, key, &[]).map(|_| ())
    }

    fn call(&self, method: &str, bucket: &str, key: &str, body: &[u8]) -> Result<Vec<u8>, S3Error> {
        let transport = |message: String| S3Error {
            status: 0,
            code: "SdkClientException".into(),
            message,
        };
        let authority = self
            .endpoint
            .strip_prefix("http://")
            .ok_or_else(|| transport(format!("not an http endpoint: {}", self.endpoint)))?;
        let mut stream = TcpStream::connect(authority)
            .map_err(|e| transport(format!("Unable to execute HTTP request: {e}")))?;
        let timeout = Some(Duration::from_secs(10));
        let _ = stream.set_read_timeout(timeout);
        let _ = stream.set_write_timeout(timeout);
        let head = format!(
            "{method} /{bucket}/{key} HTTP/1.1\r\nHost: {authority}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=standin/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\
             x-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut response = Vec::new();
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .and_then(|()| stream.read_to_end(&mut response).map(|_| ()))
            .map_err(|e| transport(format!("Unable to execute HTTP request: {e}")))?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| transport("no HTTP answer".into()))?;
        let head = String::from_utf8_lossy(&response[..split]).to_string();
        let body = response[split + 4..].to_vec();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| transport("no HTTP status".into()))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let text = String::from_utf8_lossy(&body);
        let tag = |name: &str| {
            let open = format!("<{name}>");
            let close = format!("</{name}>");
            text.split_once(&open)
                .and_then(|(_, rest)| rest.split_once(&close))
                .map(|(v, _)| v.to_string())
        };
        Err(S3Error {
            status,
            code: tag("Code").unwrap_or_else(|| format!("Http{status}")),
            message: tag("Message").unwrap_or_default(),
        })
    }
}
