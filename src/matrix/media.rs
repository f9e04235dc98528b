//! Media between the homeserver and ferry, streamed: a large file is passed through in chunks
//! and never held whole in memory. Downloads use authenticated media
//! (`/_matrix/client/v1/media/download`), uploads the v3 upload endpoint.

use futures_util::{StreamExt, TryStreamExt};
use ruma::OwnedMxcUri;

use super::client::{MatrixClient, MatrixError, Result};
use crate::network::{MediaStream, NetworkError};

impl MatrixClient {
    /// Streams `mxc://server/id` from the homeserver. Refuses mxc URIs that are not well formed.
    pub async fn download_media(&self, mxc: &str, max_size: u64) -> Result<MediaStream> {
        let (server, id) = mxc
            .strip_prefix("mxc://")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(s, i)| valid_part(s) && valid_part(i))
            .ok_or_else(|| MatrixError::Request("not an mxc:// URI".to_owned()))?;
        let url = format!(
            "{}/_matrix/client/v1/media/download/{server}/{id}",
            self.base_url()
        );
        let response = self
            .http()
            .get(url)
            .bearer_auth(self.token())
            .send()
            .await
            .map_err(|_| {
                MatrixError::Unavailable("cannot download media from the homeserver".to_owned())
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(MatrixError::Api {
                status: status.as_u16(),
                errcode: "M_UNKNOWN".to_owned(),
                message: "media download failed".to_owned(),
            });
        }
        let size = response.content_length();
        if size.is_some_and(|s| s > max_size) {
            return Err(MatrixError::Api {
                status: 413,
                errcode: "M_TOO_LARGE".to_owned(),
                message: "file too large".to_owned(),
            });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let mut seen: u64 = 0;
        let body = response
            .bytes_stream()
            .map_err(|_| {
                NetworkError::Transient("media download from the homeserver broke off".to_owned())
            })
            .map(move |chunk| {
                let chunk = chunk?;
                seen += chunk.len() as u64;
                if seen > max_size {
                    return Err(NetworkError::Rejected("file too large".to_owned()));
                }
                Ok(chunk)
            })
            .boxed();
        Ok(MediaStream {
            content_type,
            size,
            body,
        })
    }

    /// Streams media into the homeserver's media repository.
    pub async fn upload_media(&self, media: MediaStream, filename: &str) -> Result<OwnedMxcUri> {
        let filename: String = url::form_urlencoded::byte_serialize(filename.as_bytes()).collect();
        let url = format!(
            "{}/_matrix/media/v3/upload?filename={filename}",
            self.base_url()
        );
        let mut request = self
            .http()
            .post(url)
            .bearer_auth(self.token())
            .header(reqwest::header::CONTENT_TYPE, media.content_type.as_str());
        if let Some(size) = media.size {
            request = request.header(reqwest::header::CONTENT_LENGTH, size);
        }
        let body = reqwest::Body::wrap_stream(media.body.map_err(std::io::Error::other));
        let response = request.body(body).send().await.map_err(|_| {
            MatrixError::Unavailable("cannot upload media to the homeserver".to_owned())
        })?;
        let status = response.status();
        let value: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(MatrixError::Api {
                status: status.as_u16(),
                errcode: value["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned(),
                message: value["error"]
                    .as_str()
                    .unwrap_or("upload failed")
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
        value["content_uri"]
            .as_str()
            .map(OwnedMxcUri::from)
            .ok_or_else(|| MatrixError::Response("upload answer has no content_uri".to_owned()))
    }
}

fn valid_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 255
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:[]".contains(&b))
}
