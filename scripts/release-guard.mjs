// Release checks on the package.json in the current directory.
//
//   node scripts/release-guard.mjs             `prepublishOnly` of the main package: refuses
//       to publish a rat-engine users could not load. `napi prepublish -t npm` must have run
//       (it pins every platform package in optionalDependencies to this exact version), and
//       the loader, its types and the compiled TS API must be present.
//       scripts/pack-check.mjs runs it on the staged copy it packs.
//   node scripts/release-guard.mjs --versions  the first job of release.yml: package.json,
//       every npm/*/package.json and the generated loader carry one version, and on a tag
//       build (GITHUB_REF_TYPE=tag) the tag is v<version>.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseTriple } from '@napi-rs/cli'

const readJson = (path) => JSON.parse(readFileSync(path, 'utf8'))

/** The loader `napi build` generates embeds the version in its platform-package check. */
function loaderProblems(dir, version) {
  const path = join(dir, 'index.js')
  if (!existsSync(path)) return ['index.js is missing (run `npm run build:native`)']
  return readFileSync(path, 'utf8').includes(`bindingPackageVersion !== '${version}'`)
    ? []
    : [`index.js was generated for another version than ${version} (run \`npm run build:native\`)`]
}

/** Problems that forbid publishing the main package in `dir` (empty when it may go out). */
export function publishProblems(dir) {
  const pkg = readJson(join(dir, 'package.json'))
  const problems = []
  const name = pkg.napi?.packageName ?? pkg.name
  const optional = pkg.optionalDependencies ?? {}
  for (const target of pkg.napi?.targets ?? []) {
    // The same naming `napi create-npm-dirs` and `napi prepublish` use.
    const dep = `${name}-${parseTriple(target).platformArchABI}`
    if (optional[dep] !== pkg.version) {
      problems.push(`optionalDependencies["${dep}"] is ${JSON.stringify(optional[dep])}, expected exactly "${pkg.version}"`)
    }
  }
  for (const file of ['index.d.ts', 'dist/index.js', 'dist/index.d.ts', 'dist/esm/index.mjs', 'dist/esm/index.d.mts']) {
    if (!existsSync(join(dir, file))) problems.push(`${file} is missing (run \`npm run build\`)`)
  }
  return [...problems, ...loaderProblems(dir, pkg.version)]
}

/** Problems with the versions of the main package, its platform packages and the tag. */
export function versionProblems(dir, env = process.env) {
  const { version } = readJson(join(dir, 'package.json'))
  const problems = []
  if (env.GITHUB_REF_TYPE === 'tag' && env.GITHUB_REF_NAME !== `v${version}`) {
    problems.push(`tag ${env.GITHUB_REF_NAME} is not v${version}`)
  }
  const npmDir = join(dir, 'npm')
  for (const d of existsSync(npmDir) ? readdirSync(npmDir) : []) {
    const v = readJson(join(npmDir, d, 'package.json')).version
    if (v !== version) problems.push(`npm/${d}/package.json has version ${v}`)
  }
  return [...problems, ...loaderProblems(dir, version)]
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const versions = process.argv.includes('--versions')
  const problems = versions ? versionProblems(process.cwd()) : publishProblems(process.cwd())
  if (problems.length > 0) {
    console.error(versions ? 'release-guard: versions disagree:' : 'release-guard: not publishing this package:')
    for (const p of problems) console.error(`  - ${p}`)
    console.error(
      versions
        ? 'Bump every version together with `npm version <x.y.z>` (runs `napi version` and rebuilds the loader).'
        : 'Publish through the release workflow: napi create-npm-dirs, napi artifacts, napi prepublish -t npm --no-gh-release, then npm publish.',
    )
    process.exit(1)
  }
  console.log(versions ? 'release-guard: package.json, npm/* and index.js agree on the version' : 'release-guard: main package is ready to publish')
}
