//! The runtime's shape follows `--workers`.

use tokio::runtime::RuntimeFlavor;

use super::tokio_runtime;

#[test]
fn one_worker_is_a_current_thread_runtime() {
    let rt = tokio_runtime(Some(1)).unwrap();
    assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
    // Timers and I/O are enabled: the proxy needs both.
    rt.block_on(async {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    });
}

#[test]
fn more_workers_are_a_multi_threaded_runtime_of_that_size() {
    let rt = tokio_runtime(Some(3)).unwrap();
    assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
    assert_eq!(rt.metrics().num_workers(), 3);
    let default = tokio_runtime(None).unwrap();
    assert_eq!(
        default.handle().runtime_flavor(),
        RuntimeFlavor::MultiThread
    );
}
