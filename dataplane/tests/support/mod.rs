//! What the QUIC integration tests share.

use dataplane::quic::endpoint::Endpoint;

/// Echo server: every stream of every accepted connection is read to its end and written
/// back. Returns when the endpoint stops accepting.
pub async fn serve_echo(server: Endpoint) {
    while let Some(conn) = server.accept().await {
        monoio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                monoio::spawn(async move {
                    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX).await {
                        if send.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
                });
            }
        });
    }
}
