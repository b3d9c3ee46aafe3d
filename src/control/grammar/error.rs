//! Why a control line is not a command. Each variant's text is the reply
//! the operator sees (the control server adds the final newline); the
//! original's texts are kept byte for byte, and the errors this proxy adds
//! for typos name the offending token (`docs/differences.md`). Holds no
//! logic beyond the texts.

/// A control line the grammar refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A token after a complete command.
    #[error("Unexpected argument '{token}' after {command}.")]
    UnexpectedArgument {
        command: &'static str,
        token: String,
    },
    // AUTH and LIMIT: the original's texts.
    #[error("{0}")]
    Auth(crate::auth::AuthUsageError),
    #[error("{0}")]
    Limit(crate::limits::render::LimitUsageError),

    // BACKEND and FARM
    #[error("Subcommand '{word}' not recognized.")]
    SubcommandNotRecognized { word: String },
    #[error("Arguments not correctly provided")]
    BackendArguments,
    #[error(
        "Unknown backend option '{option}': expected SEND-PROXY, SEND-PROXY-V2, TLS or STREAM-PORT=<port>."
    )]
    UnknownBackendOption { option: String },
    #[error("Invalid stream port '{value}': expected STREAM-PORT=<1-65535>.")]
    InvalidStreamPort { value: String },
    #[error("DELETE requires a name argument")]
    BackendDeleteName,
    #[error("BACKEND HEALTH needs settings (INTERVAL ms, TIMEOUT ms, RISE n, FALL n, PASSIVE_FALL n, DOWN_HOLD ms), OFF or PRINT.")]
    HealthNoSettings,
    #[error("Unknown health setting '{setting}': expected INTERVAL, TIMEOUT, RISE, FALL, PASSIVE_FALL, DOWN_HOLD, OFF or PRINT.")]
    UnknownHealthSetting { setting: String },
    #[error("{setting} needs a value.")]
    HealthValueMissing {
        setting: super::health::HealthSetting,
    },
    #[error("Invalid value '{value}' for {setting}: expected {}.", .setting.expects())]
    InvalidHealthValue {
        setting: super::health::HealthSetting,
        value: String,
    },
    #[error("{sub} requires a name argument")]
    BackendName { sub: String },
    #[error("Farm name and selector must be provided.")]
    FarmNameAndSelector,
    #[error("Selector '{selector}' not found")]
    UnknownSelector { selector: String },
    #[error("Farm name and policy must be provided.")]
    FarmNameAndPolicy,
    #[error("Partition policy '{policy}' not found")]
    UnknownPartitionPolicy { policy: String },
    #[error("Farm name not provided.")]
    FarmName,

    // CONFIG, DATACENTER and LISTEN
    #[error("No subcommand provided.")]
    NoSubcommand,
    #[error("Unknown subcommand.")]
    UnknownSubcommand { word: String },
    #[error("Invalid port provided.")]
    InvalidPort,
    #[error("Unknown listener option '{option}': expected PROXY.")]
    UnknownListenerOption { option: String },
    #[error(
        "Unknown stream listener option '{option}': expected PROXY, BACKEND=<name> or ADVERTISE=<host>."
    )]
    UnknownStreamListenerOption { option: String },

    // LOG
    #[error("Command or verbosity not found.")]
    LogVerbosity,
    #[error("Type to verb is not known.")]
    LogTarget { word: String },

    // MAP and MAPHOSTNAME
    #[error("Vhost and backend must be provided")]
    MapVhostAndBackend,
    #[error("Vhost and farm name must be provided")]
    MapVhostAndFarm,
    #[error("Vhost not provided.")]
    MapVhost,
    #[error("Farm name for default must be provided")]
    MapDefaultFarm,
    #[error("Unrecognized subcommand.")]
    MapSubcommand { word: String },
    #[error("No subcommand specified.")]
    NoSubcommandSpecified,
    #[error("Only DNS subcommand is supported.")]
    OnlyDns { word: String },

    // SESSION
    #[error("Session not found.")]
    SessionId { given: Option<String> },
    /// The original checks the id exists before it names this error; the
    /// caller does that (`Session not found.` otherwise).
    #[error("Session subcommand not found.")]
    SessionSubcommand { id: u64, word: String },
    #[error("Usage: SESSION id LIMIT (DATA_RATE bytesPerSecond | DISABLE DATA_RATE)")]
    SessionLimitUsage,

    // STAT
    #[error("Only LISTEN, SEND, STOP, ENABLE, and DISABLE subcommands are supported.")]
    StatSubcommand { word: String },
    #[error("No output type specified.")]
    StatOutputType,
    #[error("json or human must be the type of output")]
    StatFormat { word: String },
    #[error("Filter specified incorrectly.")]
    StatFilter { term: String },
    #[error("No output host specified.")]
    StatHost,
    #[error("No output port specified.")]
    StatPort,
    #[error("Filters aren't supported when sending metrics.")]
    StatSendFilter,
    #[error("Invalid port '{port}' for sending stats.")]
    StatInvalidPort { port: String },
    #[error("Missing stop type.")]
    StatStopType,
    #[error("Unrecognized argument for STOP: \"{word}\".")]
    StatStopArgument { word: String },
    #[error("Missing enable/disable type.")]
    StatEnableType,

    // TLS
    #[error("Direction must be INGRESS or EGRESS")]
    TlsDirection,
    #[error("File must be specified")]
    TlsFile,
    #[error("Unknown mode: {mode}")]
    TlsVerifyMode { mode: String },
    #[error("CIPHERS needs PRINT or SET followed by a cipher list")]
    TlsCiphers,
    #[error("Unknown TLS command: {word}")]
    TlsCommand { word: String },

    // TRACE
    #[error("Usage: TRACE (VHOST vhost | SOURCE ip | SESSION id | OFF | PRINT)")]
    TraceUsage,
    #[error("Invalid IP address '{value}'.")]
    TraceAddress { value: String },
    #[error("Invalid session id '{value}'.")]
    TraceSessionId { value: String },

    // VHOST
    #[error("Session not found.")]
    VhostMissing,
    #[error("Subcommand not recognised.")]
    VhostSubcommand { word: String },
}
