//! WhatsApp, through whatsapp-rust as a linked companion device (like WhatsApp Web).

pub mod store;
