export { GatewayClient, type ConnectOptions } from './client';
export { Call, type CallStats, type EndCause, type CallState } from './call';
