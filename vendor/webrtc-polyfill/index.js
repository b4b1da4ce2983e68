// narswarm never makes WebRTC connections (browser peers: the torrent backend turns them off), but
// WebTorrent's tracker client imports simple-peer, which imports webrtc-polyfill, whose native
// module (node-datachannel 0.32) downloads a binary at install time and fails where it cannot.
// This package takes its place with the same names: importing it works, using it fails.
function unavailable (name) {
  return class {
    constructor () { throw new Error(`${name}: WebRTC is not available in narswarm`) }
  }
}

export const RTCPeerConnection = unavailable('RTCPeerConnection')
export const RTCSessionDescription = unavailable('RTCSessionDescription')
export const RTCIceCandidate = unavailable('RTCIceCandidate')
export const RTCIceTransport = unavailable('RTCIceTransport')
export const RTCDataChannel = unavailable('RTCDataChannel')
export const RTCSctpTransport = unavailable('RTCSctpTransport')
export const RTCDtlsTransport = unavailable('RTCDtlsTransport')
export const RTCCertificate = unavailable('RTCCertificate')
export const MediaStream = unavailable('MediaStream')
export const MediaStreamTrack = unavailable('MediaStreamTrack')
export const RTCError = unavailable('RTCError')
export default { RTCPeerConnection, RTCSessionDescription, RTCIceCandidate, RTCIceTransport, RTCDataChannel, RTCSctpTransport, RTCDtlsTransport, RTCCertificate, MediaStream, MediaStreamTrack, RTCError }
