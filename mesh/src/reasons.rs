//! Condition and Event reasons, gathered so that every writer spells them the same way.
//! All are CamelCase, as Kubernetes asks.

// Peer `Resolved`.
pub const RESOLVED: &str = "Resolved";
pub const LOCAL_INTERFACE_NOT_FOUND: &str = "LocalInterfaceNotFound";
pub const REMOTE_INTERFACE_NOT_FOUND: &str = "RemoteInterfaceNotFound";
pub const SELF_PEER: &str = "SelfPeer";
pub const LOCAL_KEY_PENDING: &str = "LocalKeyPending";
pub const REMOTE_KEY_PENDING: &str = "RemoteKeyPending";
pub const LOCAL_ADDRESS_PENDING: &str = "LocalAddressPending";
pub const REMOTE_ADDRESS_PENDING: &str = "RemoteAddressPending";
pub const NODE_ADDRESS_MISSING: &str = "NodeAddressMissing";
pub const NODE_NOT_FOUND: &str = "NodeNotFound";
pub const NODE_ADDRESS_UNKNOWN: &str = "NodeAddressUnknown";
pub const PRESHARED_KEY_SECRET_NOT_FOUND: &str = "PresharedKeySecretNotFound";
pub const PRESHARED_KEY_INVALID: &str = "PresharedKeyInvalid";
pub const PRESHARED_KEY_PENDING: &str = "PresharedKeyPending";

// Interface `KeyReady`.
pub const KEY_GENERATED: &str = "KeyGenerated";
pub const KEY_USER_SUPPLIED: &str = "UserSuppliedKey";
pub const KEY_NODE_LOCAL: &str = "NodeLocalKey";
pub const KEY_NODE_LOCAL_PENDING: &str = "NodeLocalKeyPending";
pub const KEY_SECRET_NOT_FOUND: &str = "SecretNotFound";
pub const KEY_SECRET_KEY_MISSING: &str = "SecretKeyMissing";
pub const KEY_INVALID: &str = "InvalidPrivateKey";
pub const KEY_SECRET_NAME_CONFLICT: &str = "SecretNameConflict";
pub const KEY_PENDING: &str = "KeyPending";
pub const KEY_ROTATING: &str = "KeyRotating";

// Interface `status.keyRotation.trigger`.
pub const ROTATION_REQUESTED: &str = "Requested";
pub const ROTATION_SCHEDULED: &str = "Scheduled";

// Peer `RotationPending` (external peers).
pub const EXTERNAL_PEER_NOT_UPDATED: &str = "ExternalPeerNotUpdated";
pub const HANDSHAKE_WITH_NEW_KEY: &str = "HandshakeWithNewKey";

// Interface `AddressAllocated`.
pub const ADDRESSES_FROM_SPEC: &str = "AddressesFromSpec";
pub const ADDRESS_ALLOCATED: &str = "Allocated";
pub const ALLOCATION_PENDING: &str = "AllocationPending";
pub const NETWORK_NOT_FOUND: &str = "NetworkNotFound";
pub const NETWORK_NOT_READY: &str = "NetworkNotReady";

// Network `Ready` and `Conflict`.
pub const NETWORK_READY: &str = "CidrAssigned";
pub const NO_CONFLICT: &str = "NoConflict";
pub const PREFIX_LENGTH_CHANGE_BLOCKED: &str = "PrefixLengthChangeBlocked";

// `TopologyValid` on Interface, Peer and Route.
pub const TOPOLOGY_VALID: &str = "Valid";
pub const ROUTE_NOT_COVERED: &str = "RouteNotCoveredByAllowedIPs";
pub const VIA_NOT_ON_LINK: &str = "ViaNotOnLink";
pub const RELAY_NOT_FORWARDING: &str = "RelayNotForwarding";
pub const OVERLAPPING_ALLOWED_IPS: &str = "OverlappingAllowedIPs";
pub const DUPLICATE_PEER: &str = "DuplicatePeer";
pub const OVERLAPPING_ADDRESSES: &str = "OverlappingAddresses";
pub const DUPLICATE_ADDRESS: &str = "DuplicateAddress";
pub const LISTEN_PORT_CONFLICT: &str = "ListenPortConflict";
pub const DEVICE_NAME_CONFLICT: &str = "DeviceNameConflict";
pub const INTERFACE_NOT_FOUND: &str = "InterfaceNotFound";
pub const NODE_MISSING: &str = "NodeNotFound";

// Events only.
pub const EVENT_SECRET_ADOPTED: &str = "KeySecretAdopted";
pub const EVENT_ADDRESS_ALLOCATED: &str = "AddressAllocated";
pub const EVENT_ADDRESS_RELEASED: &str = "AddressReleased";
pub const EVENT_CIDR_CARVED: &str = "CidrCarved";
pub const EVENT_PRESHARED_KEY_GENERATED: &str = "PresharedKeyGenerated";
pub const EVENT_KEY_ROTATION_STARTED: &str = "KeyRotationStarted";
pub const EVENT_KEY_ROTATED: &str = "KeyRotated";
pub const EVENT_KEY_ROTATION_UNSUPPORTED: &str = "KeyRotationUnsupported";
pub const EVENT_ROTATION_PENDING: &str = "RotationPending";
pub const EVENT_OLD_KEY_DELETED: &str = "OldKeyDeleted";
