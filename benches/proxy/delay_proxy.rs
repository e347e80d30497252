//! A TCP proxy on 127.0.0.1 that holds every request it forwards for a fixed delay: a stand-in
//! for a distant object store in front of a local S3 server (benches/remote.py).
//!
//! ```text
//! cargo run --release --example delay_proxy -- UPSTREAM_PORT DELAY_MS
//! ```
//!
//! Prints `READY <port>` once listening, then serves until killed. Each read from a client (an
//! HTTP request, or a burst of one) waits `DELAY_MS` before it goes upstream; responses flow
//! back untouched. Connections are independent, so concurrent requests wait concurrently, as
//! they do over a long link.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [upstream, delay] = args.as_slice() else {
        eprintln!("usage: delay_proxy UPSTREAM_PORT DELAY_MS");
        std::process::exit(2);
    };
    let upstream: u16 = upstream.parse().expect("UPSTREAM_PORT is a port number");
    let delay = Duration::from_millis(delay.parse().expect("DELAY_MS is a whole number"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("READY {}", listener.local_addr()?.port());
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                    let _ = relay(client, server, delay).await;
                }
            });
        }
    })
}

async fn relay(client: TcpStream, server: TcpStream, delay: Duration) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let back = tokio::spawn(async move { tokio::io::copy(&mut server_rx, &mut client_tx).await });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = client_rx.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        tokio::time::sleep(delay).await;
        server_tx.write_all(&buf[..n]).await?;
    }
    server_tx.shutdown().await?;
    let _ = back.await;
    Ok(())
}
