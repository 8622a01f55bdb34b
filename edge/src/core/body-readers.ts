// How the relay reads a visitor's request body to pass it on in Data frames (see StreamTable.forwardBody).
import { MAX_DATA_CHUNK } from "@burrow/protocol";

/** What forwardBody reads from: a chunk at a time, undefined at the end. */
export interface BodyReader {
  read(): Promise<Uint8Array | undefined>;
  cancel(): Promise<void>;
}

/** A body the relay already holds whole (it checked a signature over it), in MAX_DATA_CHUNK reads. */
export function bytesReader(bytes: Uint8Array): BodyReader {
  let offset = 0;
  return {
    read: async () => {
      if (offset >= bytes.byteLength) return undefined;
      const chunk = bytes.subarray(offset, offset + MAX_DATA_CHUNK);
      offset += chunk.byteLength;
      return chunk;
    },
    cancel: async () => {},
  };
}

/**
 * Reads a body in chunks of up to MAX_DATA_CHUNK. workerd's default reader hands a request body
 * over in chunks of about 4 KiB, and each costs a read, a frame and a credit check (uploads
 * measured 53 MB/s); a BYOB read into a 64 KiB buffer takes what the connection has, about
 * 62 KiB a read (160-220 MB/s). Bodies that are not byte streams get the default reader.
 */
export function chunkReader(body: ReadableStream<Uint8Array>): BodyReader {
  let byob: ReadableStreamBYOBReader | undefined;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    // not a byte stream
  }
  if (byob) {
    const reader = byob;
    return {
      // A fresh buffer each time: the read transfers it, and the frame keeps a view of it.
      read: async () => {
        const { done, value } = await reader.read(new Uint8Array(MAX_DATA_CHUNK));
        return done ? undefined : value;
      },
      cancel: () => reader.cancel(),
    };
  }
  const reader = body.getReader();
  return {
    read: async () => {
      const { done, value } = await reader.read();
      return done ? undefined : value;
    },
    cancel: () => reader.cancel(),
  };
}
