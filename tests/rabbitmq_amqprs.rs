//! End-to-end tests with the amqprs client against a real RabbitMQ, through a
//! proxy spawned per test (or straight to RabbitMQ with
//! `AMQPPROX_TEST_TARGET=direct`, to check the tests themselves).
//!
//! amqprs differs from lapin in ways a proxy can trip over: it runs on tokio,
//! negotiates its own frame size, and does not advertise
//! `authentication_failure_close`, so a refused login ends in a bare TCP
//! close. These tests own that client's view of the proxy; they never inspect
//! bytes on the wire and never skip when RabbitMQ is absent.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicConsumeArguments, BasicGetArguments, BasicPublishArguments, Channel,
    ConfirmSelectArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;
use tokio::sync::mpsc;

use support::{assert_body_eq, body_for, mixed_sizes, unique_name, within, Target};

const MIB: usize = 1024 * 1024;

fn open_arguments(
    target: &Target,
    password: &str,
    connection_name: &str,
) -> OpenConnectionArguments {
    OpenConnectionArguments::new(target.host(), target.port(), "guest", password)
        .virtual_host("/")
        .connection_name(connection_name)
        .finish()
}

async fn connect(target: &Target, connection_name: &str) -> Connection {
    Connection::open(&open_arguments(target, "guest", connection_name))
        .await
        .unwrap_or_else(|err| panic!("connect to {}: {err}", target.describe()))
}

/// A non-durable queue only this connection can use, deleted with it.
async fn declare_private_queue(channel: &Channel, label: &str) -> String {
    let name = unique_name(label);
    channel
        .queue_declare(
            QueueDeclareArguments::new(&name)
                .exclusive(true)
                .auto_delete(true)
                .finish(),
        )
        .await
        .unwrap_or_else(|err| panic!("declare queue {name}: {err}"));
    name
}

async fn publish(channel: &Channel, queue: &str, body: Vec<u8>) {
    channel
        .basic_publish(
            BasicProperties::default(),
            body,
            BasicPublishArguments::new("", queue),
        )
        .await
        .unwrap_or_else(|err| panic!("publish to {queue}: {err}"));
}

/// One publisher confirm as the broker sent it.
#[derive(Debug)]
enum Confirm {
    Ack { tag: u64, multiple: bool },
    Nack { tag: u64, multiple: bool },
}

/// Forwards the channel's publisher confirms to the test; everything else a
/// broker may push on the channel is accepted and ignored.
struct ConfirmForwarder(mpsc::UnboundedSender<Confirm>);

#[async_trait]
impl ChannelCallback for ConfirmForwarder {
    async fn close(
        &mut self,
        _channel: &Channel,
        _close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn cancel(
        &mut self,
        _channel: &Channel,
        _cancel: Cancel,
    ) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn flow(
        &mut self,
        _channel: &Channel,
        active: bool,
    ) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        let _ = self.0.send(Confirm::Ack {
            tag: ack.delivery_tag(),
            multiple: ack.mutiple(),
        });
    }

    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        let _ = self.0.send(Confirm::Nack {
            tag: nack.delivery_tag(),
            multiple: nack.multiple(),
        });
    }

    async fn publish_return(
        &mut self,
        _channel: &Channel,
        _ret: Return,
        _basic_properties: BasicProperties,
        _content: Vec<u8>,
    ) {
    }
}

/// Waits until the broker has acked delivery tags `1..=count`; any nack fails.
async fn await_all_acks(confirms: &mut mpsc::UnboundedReceiver<Confirm>, count: u64) {
    let mut acked = vec![false; count as usize + 1];
    acked[0] = true;
    let mut missing = count;
    while missing > 0 {
        let confirm = tokio::time::timeout(Duration::from_secs(60), confirms.recv())
            .await
            .unwrap_or_else(|_| panic!("{missing} publishes still unconfirmed after 60 s"))
            .expect("the confirm callback was dropped");
        let (tag, multiple) = match confirm {
            Confirm::Ack { tag, multiple } => (tag, multiple),
            Confirm::Nack { tag, multiple } => {
                panic!("the broker nacked delivery tag {tag} (multiple: {multiple})")
            }
        };
        assert!(
            tag >= 1 && tag <= count,
            "confirm for unknown delivery tag {tag}"
        );
        let first = if multiple { 1 } else { tag };
        for slot in &mut acked[first as usize..=tag as usize] {
            if !*slot {
                *slot = true;
                missing -= 1;
            }
        }
    }
}

async fn get_one(channel: &Channel, queue: &str) -> Vec<u8> {
    let what = format!("a message on {queue}");
    support::poll_for_async(Duration::from_secs(10), &what, || async {
        channel
            .basic_get(BasicGetArguments::new(queue).no_ack(true).finish())
            .await
            .unwrap_or_else(|err| panic!("basic.get on {queue}: {err}"))
            .map(|(_, _, body)| body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_open_channel_and_close() {
    let target = Target::start();
    within(&target, async {
        let connection = connect(&target, &unique_name("amqprs-connect")).await;
        assert!(connection.is_open());
        let channel = connection.open_channel(None).await.expect("open a channel");
        assert!(channel.is_open());
        channel.close().await.expect("close the channel");
        connection.close().await.expect("close the connection");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_mixed_size_messages_are_confirmed_and_come_back_intact_in_order() {
    let target = Target::start();
    within(&target, async {
        let sizes = mixed_sizes(200, &[MIB, 8 * MIB, 4 * MIB + 5]);
        let bodies: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, len)| body_for(i, *len))
            .collect();
        let total: usize = sizes.iter().sum();

        let connection = connect(&target, &unique_name("amqprs-bulk")).await;
        let channel = connection.open_channel(None).await.expect("open a channel");
        let (confirm_tx, mut confirms) = mpsc::unbounded_channel();
        channel
            .register_callback(ConfirmForwarder(confirm_tx))
            .await
            .expect("register the channel callback");
        channel
            .confirm_select(ConfirmSelectArguments::default())
            .await
            .expect("enable publisher confirms");
        let queue = declare_private_queue(&channel, "amqprs-bulk").await;

        let started = Instant::now();
        for body in &bodies {
            publish(&channel, &queue, body.clone()).await;
        }
        await_all_acks(&mut confirms, bodies.len() as u64).await;
        let published = started.elapsed();

        let (_tag, mut deliveries) = channel
            .basic_consume_rx(
                BasicConsumeArguments::new(&queue, "amqprs-bulk-consumer")
                    .auto_ack(true)
                    .finish(),
            )
            .await
            .expect("start consuming");
        for (i, expected) in bodies.iter().enumerate() {
            let message = tokio::time::timeout(Duration::from_secs(60), deliveries.recv())
                .await
                .unwrap_or_else(|_| panic!("message {i} was not delivered within 60 s"))
                .unwrap_or_else(|| panic!("the consumer ended before message {i}"));
            let deliver = message.deliver.expect("a delivery carries Basic.Deliver");
            assert!(!deliver.redelivered(), "message {i} was redelivered");
            let body = message.content.unwrap_or_default();
            assert_body_eq(i, &body, expected);
        }
        eprintln!(
            "{} messages, {total} bytes: published and confirmed in {published:?}, round trip {:?} ({})",
            bodies.len(),
            started.elapsed(),
            target.describe()
        );

        channel.close().await.expect("close the channel");
        connection.close().await.expect("close the connection");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_channels_on_one_connection_each_get_their_own_message() {
    let target = Target::start();
    within(&target, async {
        let connection = connect(&target, &unique_name("amqprs-channels")).await;
        let mut channels = Vec::new();
        for _ in 0..50 {
            channels.push(connection.open_channel(None).await.expect("open a channel"));
        }
        let ids: HashSet<u16> = channels.iter().map(Channel::channel_id).collect();
        assert_eq!(ids.len(), 50, "channel ids are not distinct: {ids:?}");

        let mut tasks = tokio::task::JoinSet::new();
        for (i, channel) in channels.into_iter().enumerate() {
            tasks.spawn(async move {
                let queue = declare_private_queue(&channel, &format!("amqprs-channel-{i}")).await;
                let body =
                    format!("message for channel {} (#{i})", channel.channel_id()).into_bytes();
                publish(&channel, &queue, body.clone()).await;
                let got = get_one(&channel, &queue).await;
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&body),
                    "channel {} got another channel's message",
                    channel.channel_id()
                );
                channel.close().await.expect("close the channel");
            });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(err) = joined {
                std::panic::resume_unwind(err.into_panic());
            }
        }
        assert!(connection.is_open());
        connection.close().await.expect("close the connection");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_fails_promptly() {
    let target = Target::start();
    within(&target, async {
        let arguments = open_arguments(
            &target,
            "definitely-not-the-password",
            &unique_name("amqprs-wrong-password"),
        );
        let started = Instant::now();
        // RabbitMQ answers a client without `authentication_failure_close`
        // by closing TCP; through the proxy that close must reach the client
        // rather than leave it waiting.
        let outcome = tokio::time::timeout(Duration::from_secs(10), Connection::open(&arguments))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "a refused login still had not failed after 10 s via {}",
                    target.describe()
                )
            });
        match outcome {
            Ok(connection) => {
                let _ = connection.close().await;
                panic!("a wrong password was accepted via {}", target.describe());
            }
            Err(err) => eprintln!(
                "wrong password via {} failed after {:?}: {err}",
                target.describe(),
                started.elapsed()
            ),
        }
    })
    .await;
}
