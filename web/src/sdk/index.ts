export { GatewayClient, type ConnectOptions } from './client';
export { Call, type CallStats, type EndCause, type CallState, type CallEndInfo, type GatewayError, type TransferError } from './call';
