export { App, createApp } from './app.js'
export type {
  AddressInfo,
  AppOptions,
  RedisOptions,
  AuthRule,
  ChunkedHandler,
  ChunkedRouteOptions,
  CompressionOptions,
  CorsOptions,
  CorsOrigin,
  ErrorHandler,
  ErrorResponse,
  Handler,
  Limits,
  Logger,
  ListenOptions,
  RouteOptions,
  SseHandler,
  StreamRouteOptions,
  TlsOptions,
} from './app.js'
export { Channel } from './channel.js'
export type { ChannelOptions } from './channel.js'
export { ChunkedStream } from './chunked.js'
export { HttpError, RatError } from './errors.js'
export type { Hook } from './hooks.js'
export { binaryStream, ChunkedResponse, chunkedResponse, jsonStream, textStream } from './helpers.js'
export type { StreamSource } from './helpers.js'
export type { AccessLogEntry, EngineMetrics, NativeChannelMetrics as ChannelMetrics } from './native.js'
export { html, json, redirect, reply, Reply, text } from './reply.js'
export type { ReplyInit } from './reply.js'
export { RatRequest } from './request.js'
export { SseEvent, sseEvent, SseStream } from './sse.js'
export type { SseEventOptions } from './sse.js'
export type { BaseStream } from './stream.js'
export type { Json, PathParams } from './types.js'
export { RatWebSocket } from './ws.js'
export type { WsHandlers, WsRouteOptions } from './ws.js'
