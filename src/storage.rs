//! Where uploaded files' bytes live: the [`AttachmentStore`] trait, with a local directory
//! ([`LocalStore`], the default) and any S3-compatible bucket ([`S3Store`], through the
//! `object_store` crate: AWS S3, MinIO, Ceph, R2, …). Which one a node uses is set by
//! `KEFU_ATTACHMENT_STORE` (see [`crate::config::Settings`]); every node of a deployment
//! must reach the same store (a shared directory or one bucket).
//!
//! Keys are chosen by kefu (derived from the attachment's random id), never by a client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::config::Settings;
use crate::error::{AppError, AppResult};

/// Stores and returns files by key.
pub trait AttachmentStore: Send + Sync {
    /// Stores `bytes` under `key`, replacing what was there; atomic (readers see the
    /// whole file or none).
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, AppResult<()>>;
    /// The file under `key`; `not_found` when there is none.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, AppResult<Bytes>>;
    /// Removes the file (no error when it is already gone).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, AppResult<()>>;
    /// What the store is, for the start-up log.
    fn describe(&self) -> String;
}

/// The store the settings name.
pub fn from_settings(settings: &Settings) -> Result<Arc<dyn AttachmentStore>, String> {
    match settings.attachment_store.as_str() {
        "local" => Ok(Arc::new(LocalStore::new(&settings.attachment_dir))),
        "s3" => S3Store::new(settings).map(|s| Arc::new(s) as Arc<dyn AttachmentStore>),
        other => Err(format!(
            "KEFU_ATTACHMENT_STORE must be local or s3, not {other:?}"
        )),
    }
}

/// A key is kefu's own: lower-case hex and `/` only, no `..`, no leading `/`.
fn check_key(key: &str) -> AppResult<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && !key.contains("//")
        && key
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'/' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AppError::internal(format!("invalid storage key {key:?}")))
    }
}

/// Files in a local directory (`KEFU_ATTACHMENT_DIR`), created on first write.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl AsRef<Path>) -> LocalStore {
        LocalStore {
            root: root.as_ref().to_path_buf(),
        }
    }

    fn path(&self, key: &str) -> AppResult<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

fn io_error(what: &str, e: std::io::Error) -> AppError {
    log::error!("attachment store: {what}: {e}");
    AppError::unavailable("attachment store unavailable")
}

impl AttachmentStore for LocalStore {
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, AppResult<()>> {
        Box::pin(async move {
            let path = self.path(key)?;
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| io_error("create directory", e))?;
            }
            // Written beside its final name, then renamed: a reader never sees half a file.
            let tmp = path.with_extension(format!("part-{}", uuid::Uuid::new_v4().simple()));
            tokio::fs::write(&tmp, &bytes)
                .await
                .map_err(|e| io_error("write", e))?;
            if let Err(e) = tokio::fs::rename(&tmp, &path).await {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(io_error("rename", e));
            }
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, AppResult<Bytes>> {
        Box::pin(async move {
            let path = self.path(key)?;
            match tokio::fs::read(&path).await {
                Ok(b) => Ok(Bytes::from(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(AppError::not_found("attachment"))
                }
                Err(e) => Err(io_error("read", e)),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, AppResult<()>> {
        Box::pin(async move {
            let path = self.path(key)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error("delete", e)),
            }
        })
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }
}

/// Files in an S3-compatible bucket.
pub struct S3Store {
    store: object_store::aws::AmazonS3,
    bucket: String,
    prefix: String,
}

impl S3Store {
    pub fn new(settings: &Settings) -> Result<S3Store, String> {
        let bucket = settings
            .s3_bucket
            .clone()
            .filter(|b| !b.is_empty())
            .ok_or("KEFU_S3_BUCKET is required when KEFU_ATTACHMENT_STORE=s3")?;
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_region(&settings.s3_region);
        if let Some(endpoint) = settings.s3_endpoint.as_deref().filter(|e| !e.is_empty()) {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                // MinIO and most self-hosted stores address buckets by path.
                .with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) =
            (&settings.s3_access_key_id, &settings.s3_secret_access_key)
        {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        let store = builder
            .build()
            .map_err(|e| format!("S3 attachment store: {e}"))?;
        Ok(S3Store {
            store,
            bucket,
            prefix: settings.s3_prefix.trim_matches('/').to_string(),
        })
    }

    fn path(&self, key: &str) -> AppResult<object_store::path::Path> {
        check_key(key)?;
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        object_store::path::Path::parse(full).map_err(AppError::internal)
    }
}

fn s3_error(what: &str, e: object_store::Error) -> AppError {
    match e {
        object_store::Error::NotFound { .. } => AppError::not_found("attachment"),
        other => {
            log::error!("attachment store (S3): {what}: {other}");
            AppError::unavailable("attachment store unavailable")
        }
    }
}

impl AttachmentStore for S3Store {
    fn put<'a>(&'a self, key: &'a str, bytes: Bytes) -> BoxFuture<'a, AppResult<()>> {
        use object_store::ObjectStoreExt;
        Box::pin(async move {
            let path = self.path(key)?;
            self.store
                .put(&path, object_store::PutPayload::from_bytes(bytes))
                .await
                .map_err(|e| s3_error("put", e))?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, AppResult<Bytes>> {
        use object_store::ObjectStoreExt;
        Box::pin(async move {
            let path = self.path(key)?;
            let got = self
                .store
                .get(&path)
                .await
                .map_err(|e| s3_error("get", e))?;
            got.bytes().await.map_err(|e| s3_error("read", e))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, AppResult<()>> {
        use object_store::ObjectStoreExt;
        Box::pin(async move {
            let path = self.path(key)?;
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(s3_error("delete", e)),
            }
        })
    }

    fn describe(&self) -> String {
        format!("S3 bucket {} (prefix {:?})", self.bucket, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_round_trip() {
        let dir = std::env::temp_dir().join(format!("kefu-store-{}", uuid::Uuid::new_v4()));
        let store = LocalStore::new(&dir);
        store
            .put("ab/cdef", Bytes::from_static(b"hello"))
            .await
            .expect("put");
        assert_eq!(store.get("ab/cdef").await.expect("get"), "hello");
        store.delete("ab/cdef").await.expect("delete");
        assert_eq!(
            store.get("ab/cdef").await.expect_err("gone").code,
            crate::error::ErrorCode::NotFound
        );
        store
            .delete("ab/cdef")
            .await
            .expect("deleting twice is fine");
        assert!(store.get("../etc/passwd").await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
