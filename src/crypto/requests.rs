//! Sends a machine's outgoing requests (key uploads, key queries and claims, to-device
//! messages, signatures) as its user and device, and hands the answers back to the machine.

use matrix_sdk_crypto::types::requests::{AnyOutgoingRequest, ToDeviceRequest};
use ruma::{
    TransactionId,
    api::client::{keys::get_keys, message::send_message_event, to_device::send_event_to_device},
};

use super::{Crypto, Result, machines::LoadedMachine};

/// Rounds of `outgoing_requests` per flush: an upload can leave more keys to upload.
const MAX_ROUNDS: usize = 4;

impl Crypto {
    /// Sends everything the machine wants sent, until it wants nothing more (bounded).
    pub(crate) async fn flush(&self, machine: &LoadedMachine) -> Result<()> {
        let _guard = machine.outgoing.lock().await;
        for _ in 0..MAX_ROUNDS {
            let requests = machine.olm.outgoing_requests().await?;
            if requests.is_empty() {
                return Ok(());
            }
            for request in requests {
                self.send_request(machine, request.request_id(), request.request())
                    .await?;
            }
        }
        Ok(())
    }

    /// Sends one request as the machine's user and device, then marks it sent.
    pub(crate) async fn send_request(
        &self,
        machine: &LoadedMachine,
        request_id: &TransactionId,
        request: &AnyOutgoingRequest,
    ) -> Result<()> {
        let user = Some(&*machine.user);
        let device = Some(&*machine.device);
        match request {
            AnyOutgoingRequest::KeysUpload(request) => {
                let response = self
                    .client
                    .send_as_device(request.clone(), user, device)
                    .await?;
                machine
                    .olm
                    .mark_request_as_sent(request_id, &response)
                    .await?;
            }
            AnyOutgoingRequest::KeysQuery(request) => {
                let mut query = get_keys::v3::Request::new();
                query.device_keys = request.device_keys.clone();
                query.timeout = request.timeout;
                let response = self.client.send_as_device(query, user, device).await?;
                machine
                    .olm
                    .mark_request_as_sent(request_id, &response)
                    .await?;
            }
            AnyOutgoingRequest::KeysClaim(request) => {
                let response = self
                    .client
                    .send_as_device(request.clone(), user, device)
                    .await?;
                machine
                    .olm
                    .mark_request_as_sent(request_id, &response)
                    .await?;
            }
            AnyOutgoingRequest::ToDeviceRequest(request) => {
                self.send_to_device(machine, request).await?;
                let response = send_event_to_device::v3::Response::new();
                machine
                    .olm
                    .mark_request_as_sent(request_id, &response)
                    .await?;
            }
            AnyOutgoingRequest::SignatureUpload(request) => {
                let response = self
                    .client
                    .send_as_device(request.clone(), user, device)
                    .await?;
                machine
                    .olm
                    .mark_request_as_sent(request_id, &response)
                    .await?;
            }
            AnyOutgoingRequest::RoomMessage(request) => {
                let send = send_message_event::v3::Request::new(
                    request.room_id.clone(),
                    request.txn_id.clone(),
                    &*request.content,
                )
                .map_err(|e| super::CryptoError::Invalid(e.to_string()))?;
                let response = self.client.send_as_device(send, user, device).await?;
                machine
                    .olm
                    .mark_request_as_sent(request_id, &response)
                    .await?;
            }
        }
        Ok(())
    }

    /// Sends a to-device request (not marked sent: the caller does, with its own id).
    pub(crate) async fn send_to_device(
        &self,
        machine: &LoadedMachine,
        request: &ToDeviceRequest,
    ) -> Result<()> {
        let send = send_event_to_device::v3::Request::new_raw(
            request.event_type.clone(),
            request.txn_id.clone(),
            request.messages.clone(),
        );
        self.client
            .send_as_device(send, Some(&machine.user), Some(&machine.device))
            .await?;
        Ok(())
    }
}
