# ringway: the data-stream header of cloudflared's QUIC transport ("argotunnel").
#
# Written for ringway from the published interface facts of cloudflared's
# tunnelrpc/proto/quic_metadata_protocol.capnp: the file id, the type ids and the field
# ordinals below must stay byte-for-byte compatible with the stock connector.
# Regenerate the Rust code with dataplane/scripts/regen-capnp.sh.
@0xb29021ef7421cc32;

# Sent by the edge at the start of every data stream (after the preamble and version).
struct ConnectRequest @0xc47116a1045e4061 {
  dest @0 :Text;                 # full URL (http/websocket) or the origin address (tcp)
  type @1 :ConnectionType;
  metadata @2 :List(Metadata);
}

enum ConnectionType @0xc52e1bac26d379c8 {
  http @0;
  websocket @1;
  tcp @2;
}

struct Metadata @0xe1446b97bfd1cd37 {
  key @0 :Text;
  val @1 :Text;
}

# Sent back by the connector, same preamble, before the response body.
struct ConnectResponse @0xb1032ec91cef8727 {
  error @0 :Text;
  metadata @1 :List(Metadata);
}
