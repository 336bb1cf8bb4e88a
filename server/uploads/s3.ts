// The remote blob store of a fleet: an S3-compatible object store (AWS S3, MinIO, Ceph RGW,
// Garage…) through the AWS SDK. Blobs are put once and never changed; every host that has
// not seen one gets it from here (server/uploads/store.ts verifies its digest). Configured
// by ZVIZ_S3_*; without it a single host keeps its uploads on its own disk.
import { createReadStream, createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, NoSuchKey, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import type { BlobRemote } from './store.js';

export interface S3Config {
  endpoint: string | null;
  bucket: string;
  region: string;
  /** Key prefix, so one bucket can serve several fleets. */
  prefix: string;
  accessKeyId: string | null;
  secretAccessKey: string | null;
  /** Path-style URLs (`endpoint/bucket/key`): what most self-hosted stores need. */
  forcePathStyle: boolean;
}

export class S3Blobs implements BlobRemote {
  readonly description: string;
  readonly #client: S3Client;

  constructor(private readonly config: S3Config) {
    this.description = `s3://${config.bucket}/${config.prefix}${config.endpoint === null ? '' : ` at ${config.endpoint}`}`;
    this.#client = new S3Client({
      region: config.region,
      forcePathStyle: config.forcePathStyle,
      ...(config.endpoint === null ? {} : { endpoint: config.endpoint }),
      ...(config.accessKeyId !== null && config.secretAccessKey !== null
        ? { credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey } }
        : {}),
      maxAttempts: 3,
      // Checksums only where the API requires them: the SDK's default (a CRC trailer on
      // aws-chunked uploads) is not understood by every S3-compatible store.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  async put(key: string, file: string, size: number): Promise<void> {
    await this.#client.send(
      new PutObjectCommand({ Bucket: this.config.bucket, Key: this.config.prefix + key, Body: createReadStream(file), ContentLength: size }),
    );
  }

  async get(key: string, destFile: string): Promise<boolean> {
    let body: unknown;
    try {
      const out = await this.#client.send(new GetObjectCommand({ Bucket: this.config.bucket, Key: this.config.prefix + key }));
      body = out.Body;
    } catch (e) {
      if (e instanceof NoSuchKey || (e as { name?: string }).name === 'NoSuchKey' || (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
      throw e;
    }
    if (!(body instanceof Readable)) throw new Error('the object store answered without a body');
    await pipeline(body, createWriteStream(destFile, { flags: 'wx', mode: 0o600 }));
    return true;
  }

  close(): void {
    this.#client.destroy();
  }
}
