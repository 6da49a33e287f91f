// Path parameters typed from the route pattern: `/items/<int:id>/:name` gives
// `{ id: number; name: string }`.

type Simplify<T> = { [K in keyof T]: T[K] } & {}

type Segment<S extends string> = S extends `:${infer N}`
  ? { [K in N]: string }
  : S extends `*${infer N}`
    ? { [K in N]: string }
    : S extends `<int:${infer N}>`
      ? { [K in N]: number }
      : S extends `<float:${infer N}>`
        ? { [K in N]: number }
        : S extends `<${string}:${infer N}>`
          ? { [K in N]: string }
          : S extends `<${infer N}>`
            ? { [K in N]: string }
            : S extends `{*${infer N}}`
              ? { [K in N]: string }
              : S extends `{${infer N}}`
                ? { [K in N]: string }
                : unknown

type Segments<P extends string> = P extends `${infer A}/${infer B}` ? Segment<A> & Segments<B> : Segment<P>

/** The params object of a route pattern. */
export type PathParams<P extends string> = string extends P
  ? Record<string, string | number>
  : Simplify<Segments<P> & {}>

/** Any value JSON can carry. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json }
