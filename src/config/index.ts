export { loadConfig, validateConfig, redactConfig, isLoopback, type LoadResult } from './loader';
export { ConfigSchema, type GatewayConfig, type GatewayConfigInput } from './schema';
