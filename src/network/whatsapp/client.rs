//! Building whatsapp-rust clients the way ferry runs them: over ferry's store, at the configured
//! web socket and version, with events delivered in order into a channel, and (for linked
//! sessions) received messages stored in ferry's database before WhatsApp gets its ack.

use std::sync::Arc;

use tokio::sync::{OnceCell, mpsc};
use whatsapp_rust::{
    bot::{Bot, EventDelivery},
    http::UreqHttpClient,
    pair_code::PairCodeOptions,
    transport::TokioWebSocketTransportFactory,
    types::events::Event,
    wacore::store::DevicePropsOverride,
};
use zeroize::Zeroizing;

use super::store::WaStore;
use crate::{
    config::WhatsAppConfig,
    crypto::store::{StoreKey, StoreSecret},
    db::Db,
    network::NetworkError,
};

/// What every WhatsApp login of this ferry shares.
pub struct Shared {
    pub config: WhatsAppConfig,
    pub db: Db,
    pickle_key: Zeroizing<String>,
    key: OnceCell<StoreKey>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(config: WhatsAppConfig, db: Db, pickle_key: &str) -> Arc<Self> {
        Arc::new(Self {
            config,
            db,
            pickle_key: Zeroizing::new(pickle_key.to_owned()),
            key: OnceCell::new(),
        })
    }

    /// The store key (unlocked once, from `encryption.pickle_key`).
    pub async fn store_key(&self) -> Result<StoreKey, NetworkError> {
        self.key
            .get_or_try_init(|| {
                StoreKey::load_or_create(&self.db, StoreSecret::Passphrase(self.pickle_key.clone()))
            })
            .await
            .cloned()
            .map_err(|e| NetworkError::Rejected(format!("cannot unlock the WhatsApp store: {e}")))
    }

    /// The store of one WhatsApp login.
    pub async fn store(&self, id: &str) -> Result<WaStore, NetworkError> {
        Ok(WaStore::open(self.db.clone(), self.store_key().await?, id))
    }
}

/// whatsapp-rust's HTTP client (media up- and downloads), which can reach one test host over
/// plain HTTP: the library always builds `https://` media URLs, and a test network (testnet's
/// simulator) serves media without TLS. Every other URL is left alone.
struct MediaHttp {
    inner: UreqHttpClient,
    plain_host: Option<String>,
}

#[async_trait::async_trait]
impl whatsapp_rust::http::HttpClient for MediaHttp {
    async fn execute(
        &self,
        mut request: whatsapp_rust::http::HttpRequest,
    ) -> whatsapp_rust::anyhow::Result<whatsapp_rust::http::HttpResponse> {
        if let Some(host) = &self.plain_host
            && let Some(rest) = request.url.strip_prefix(&format!("https://{host}/"))
        {
            request.url = format!("http://{host}/{rest}");
        }
        self.inner.execute(request).await
    }
}

/// The receiving end of a client's events, in the order WhatsApp sent them.
pub type Events = mpsc::UnboundedReceiver<Arc<Event>>;

/// A client over `store`, not yet started. `pair_code`: link by phone number instead of QR.
pub async fn build(
    shared: &Shared,
    store: WaStore,
    pair_code: Option<String>,
    hook: Option<super::inbox::InboxHook>,
) -> Result<(Bot, Events), NetworkError> {
    let config = &shared.config;
    let mut transport = TokioWebSocketTransportFactory::new();
    if !config.ws_url.is_empty() {
        transport = transport.with_url(config.ws_url.clone());
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let mut builder = Bot::builder()
        .with_backend(store)
        .with_transport_factory(transport)
        .with_http_client(MediaHttp {
            inner: UreqHttpClient::new(),
            plain_host: Some(config.media_http_host.clone()).filter(|h| !h.is_empty()),
        })
        .with_device_props(DevicePropsOverride::new().with_os(config.device_name.clone()))
        // In order, through one mailbox: ferry's own channel takes them at once, so the
        // mailbox never fills up and drops one.
        .with_event_delivery(EventDelivery::Ordered { capacity: 65_536 })
        .on_event(move |event, _client| {
            let _ = tx.send(event);
            async {}
        });
    if let Some(version) = config.version_triple() {
        builder = builder.with_version(version);
    }
    if !config.history_sync {
        builder = builder.skip_history_sync();
    }
    if let Some(phone) = pair_code {
        builder = builder.with_pair_code(PairCodeOptions {
            phone_number: phone,
            display_os: Some(config.device_name.clone()),
            ..Default::default()
        });
    }
    if let Some(hook) = hook {
        builder = builder.with_inbound_durability_hook(hook);
    }
    let bot = builder
        .build()
        .await
        .map_err(|e| NetworkError::Transient(format!("cannot start the WhatsApp client: {e}")))?;
    Ok((bot, rx))
}
